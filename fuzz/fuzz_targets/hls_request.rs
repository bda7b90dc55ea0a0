//! Arbitrary bytes as an HLS request's file name and query (`/hls/{stream}/{name}?{query}`):
//! a name is either one the HLS output makes or refused, a query either valid delivery
//! directives or a 400; nothing panics.

#![no_main]

use bridge_proto::mux::hls::names::HlsFile;
use bridge_proto::mux::hls::playlist::DeliveryDirectives;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (name, query) = text.split_once('?').unwrap_or((text, ""));
    if let Some(file) = HlsFile::parse(name) {
        // Exactly the name the output writes for it.
        assert_eq!(file.to_string(), name);
        // Served from inside the stream's folder only.
        assert!(!name.contains('/') && !name.contains('\\') && !name.starts_with('.'));
        assert!(!name.is_empty());
    }
    let _ = DeliveryDirectives::parse(query);
});
