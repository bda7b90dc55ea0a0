/* A do-nothing libgupnp-igd-1.0.so.4 for the simple-whip-client interop test.
 *
 * On Debian bookworm, whip-client links libsoup 2.4 while libnice's UPnP support pulls in
 * libgupnp-igd, which links libsoup 3: GLib aborts as soon as both are loaded in one process.
 * The test builds this file into its scratch folder (gcc, `pkg-config gobject-2.0`) as a library
 * with that soname and puts it first on LD_LIBRARY_PATH, so libnice loads it instead. UPnP port
 * mapping has no use inside the test's network namespace: no IGD object is ever made (thread_new
 * returns NULL, which libnice takes as "no UPnP") and the rest do nothing. */
#include <glib-object.h>

GType gupnp_simple_igd_get_type(void) { return G_TYPE_INVALID; }

gpointer gupnp_simple_igd_thread_new(void) { return NULL; }

void gupnp_simple_igd_add_port(void) {}

void gupnp_simple_igd_remove_port_local(void) {}
