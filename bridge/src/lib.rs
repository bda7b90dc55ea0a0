//! WHIP (RFC 9725) ingest bridge: WebRTC publishers in, RTMP and HLS out.
//!
//! This crate is the runtime: [`rtc`], [`http`], [`session`] and [`sink`] are the IO edges that
//! drive the pure protocol crate ([`bridge_proto`], re-exported as [`media`], [`mux`] and, with
//! the offer checks, [`whip`]); [`hls`] is the store between the HLS outputs and the HTTP layer.
//! [`Bridge`] runs the whole thing inside another program:
//!
//! ```no_run
//! # async fn demo() -> Result<(), bridge::StartError> {
//! let config = bridge::Config { http: "127.0.0.1:0".parse().unwrap(), ..Default::default() };
//! let running = bridge::Bridge::start(config).await?;
//! println!("WHIP endpoint: http://{}/whip/<stream>", running.http_addr());
//! running.shutdown().await;
//! # Ok(()) }
//! ```

pub mod app;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod hls;
pub mod hooks;
pub mod http;
pub mod ids;
pub mod metrics;
pub mod outbound;
pub mod ratelimit;
pub mod rtc;
pub mod session;
pub mod sink;
pub mod transcode;
pub mod whip;

pub use bridge_proto::{media, mux, rtmp_url};

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener, ListenerExt};
pub use config::{Cli, Config, Settings};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Why the bridge could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// A socket could not be bound.
    #[error("binding {what} {addr}: {source}")]
    Bind {
        /// http or udp
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Serves `router` on `listener` until `stopped` turns true, then lets the requests under way
/// finish.
async fn serve<L>(listener: L, router: axum::Router, mut stopped: watch::Receiver<bool>)
where
    L: Listener<Addr = SocketAddr>,
    for<'a> SocketAddr: Connected<IncomingStream<'a, L>>,
{
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    let serve = axum::serve(listener, service).with_graceful_shutdown(async move {
        let _ = stopped.wait_for(|s| *s).await;
    });
    if let Err(err) = serve.await {
        tracing::error!(%err, "http server failed");
    }
}

/// A running bridge.
#[derive(Debug)]
pub struct Bridge {
    app: Arc<app::App>,
    http_addr: SocketAddr,
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
    udp_reader: JoinHandle<()>,
    lag_watch: JoinHandle<()>,
    /// Reloads the HTTPS certificate when its files change.
    tls_watch: Option<JoinHandle<()>>,
    /// Keeps this node registered in its cluster (`--cluster-redis`).
    cluster: Option<JoinHandle<()>>,
}

/// Connections the kernel queues for the HTTP listener before `accept` (capped by
/// `net.core.somaxconn`). tokio's `bind` asks for 1,024; at 3,000 new connections a second
/// (loadgen at 3x the set-up capacity) that queue overflowed whenever the accept loop fell a
/// third of a second behind, and each connection dropped so waited for the client's SYN
/// retransmit: admitted and refused POSTs took 1 to 3 s at their 99th percentile.
const HTTP_BACKLOG: u32 = 8192;

/// Binds the HTTP listener as tokio's `TcpListener::bind` does (`SO_REUSEADDR`), with a longer
/// accept queue.
fn bind_http(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(HTTP_BACKLOG)
}

impl Bridge {
    /// Checks the configuration, binds the HTTP and UDP sockets and starts serving.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        Self::start_with(config.into_settings()?).await
    }

    /// Binds the HTTP and UDP sockets and starts serving, with settings already parsed.
    pub async fn start_with(settings: Settings) -> Result<Self, StartError> {
        let metrics = Arc::new(metrics::Metrics::default());
        let udp_addr = settings.udp.bind;
        let udp = rtc::udp::UdpMux::bind(udp_addr, settings.udp.recv_buffer, metrics.clone())
            .await
            .map_err(|source| StartError::Bind {
                what: "udp",
                addr: udp_addr,
                source,
            })?;
        let bind_error = |source| StartError::Bind {
            what: "http",
            addr: settings.http,
            source,
        };
        let listener = bind_http(settings.http).map_err(bind_error)?;
        let http_addr = listener.local_addr().map_err(bind_error)?;
        let tls = settings.tls.clone();
        let tls_config = tls
            .as_ref()
            .map(|certs| certs.server_config())
            .transpose()
            .map_err(|e| config::ConfigError::Invalid(format!("HTTPS: {e}")))?;
        // With port 0 the bound port is the one to tell others (the webhooks' `node`).
        let settings = Settings {
            http: http_addr,
            ..settings
        };
        let app = app::App::new(settings, metrics, udp.clone())?;
        let udp_reader = tokio::spawn(udp.run());
        let lag_watch = tokio::spawn(app.clone().watch_loop_lag());
        let tls_watch = tls.map(|certs| tokio::spawn(certs.watch(app.metrics.clone())));
        let cluster = app
            .cluster
            .clone()
            .map(|cluster| tokio::spawn(cluster.run(app.clone())));
        let (stop, stopped) = watch::channel(false);
        let router = http::router(app.clone());
        let server = match tls_config {
            None => tokio::spawn(serve(listener, router, stopped)),
            // `tap_io` does nothing to the streams; it is what gives axum's `ConnectInfo` of a
            // `SocketAddr` for a listener other than its own TCP one.
            Some(config) => tokio::spawn(serve(
                http::tls::TlsListener::new(listener, config).tap_io(|_| {}),
                router,
                stopped,
            )),
        };
        let scheme = if tls_watch.is_some() { "https" } else { "http" };
        tracing::info!(http = %http_addr, scheme, udp = %app.udp.local_addr(), "bridge listening");
        Ok(Self {
            app,
            http_addr,
            stop,
            server,
            udp_reader,
            lag_watch,
            tls_watch,
            cluster,
        })
    }

    /// The bound HTTP address (useful with port 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The bound UDP address.
    pub fn udp_addr(&self) -> SocketAddr {
        self.app.udp.local_addr()
    }

    /// Shared state, for tests and embedding programs that want metrics or counts.
    pub fn app(&self) -> &Arc<app::App> {
        &self.app
    }

    /// Drains: refuses new sessions and waits until the live ones have ended or `timeout`
    /// passed (call [`Bridge::shutdown`] then, which ends the rest cleanly).
    pub async fn drain(&self, timeout: std::time::Duration) {
        self.app.start_draining();
        let deadline = tokio::time::Instant::now() + timeout;
        while self.app.session_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        tracing::info!(
            left = self.app.session_count(),
            "drained; ending the sessions left"
        );
    }

    /// Ends every session cleanly, stops serving, and releases the sockets.
    pub async fn shutdown(self) {
        self.app.shutdown().await;
        if let Some(task) = self.cluster {
            task.abort();
            let _ = task.await;
        }
        if let Some(cluster) = &self.app.cluster {
            cluster.leave().await;
        }
        let _ = self.stop.send(true);
        let _ = self.server.await;
        self.udp_reader.abort();
        let _ = self.udp_reader.await;
        self.lag_watch.abort();
        let _ = self.lag_watch.await;
        if let Some(tls_watch) = self.tls_watch {
            tls_watch.abort();
            let _ = tls_watch.await;
        }
        tracing::info!("bridge stopped");
    }
}
