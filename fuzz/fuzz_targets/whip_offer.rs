//! Arbitrary bytes as a WHIP POST body (an SDP offer): errors are fine (they become a 400 or a
//! 422), panics are not, and an accepted offer has what the session needs.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(offer) = bridge::whip::offer::Offer::parse(data) {
        assert!(!offer.credentials.ufrag.is_empty() && !offer.credentials.pwd.is_empty());
        assert!(offer.audio_mid.is_some() || offer.video_mid.is_some());
        assert!(!offer.first_mid.is_empty());
    }
});
