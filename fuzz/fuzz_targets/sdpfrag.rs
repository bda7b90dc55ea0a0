//! Arbitrary bytes as a trickle or ICE-restart PATCH body (`application/trickle-ice-sdpfrag`):
//! errors are fine (a 400), panics are not, and every accepted candidate has an identity.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frag) = bridge_proto::whip::sdpfrag::SdpFrag::parse(data) {
        for candidate in &frag.candidates {
            assert!(candidate.line.starts_with("candidate:"));
            assert!(!candidate.key.is_empty());
        }
    }
});
