//! Arbitrary bytes as an HLS request's file name and query (`/hls/{stream}/{name}?{query}`),
//! and as a ladder rendition's folder (`/hls/{stream}/{folder}/...`): a name or folder is
//! either one the HLS output makes or refused, a query either valid delivery directives or a
//! 400; nothing panics.

#![no_main]

use bridge_proto::mux::hls::names::{HlsFile, LadderRendition};
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
    if let Some(rendition) = LadderRendition::parse(name) {
        // Exactly the folder the output writes, and a plain one: no way out of the stream's.
        assert_eq!(rendition.to_string(), name);
        assert!(name.bytes().all(|b| b.is_ascii_alphanumeric()));
    }
    let _ = DeliveryDirectives::parse(query);
});
