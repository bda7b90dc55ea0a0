//! Arbitrary bytes as a WHIP POST body (an SDP offer), through the whole offer -> answer path:
//! the bridge's own checks, then the WebRTC stack taking and answering it. Errors are fine (a
//! 400 or a 422), panics are not; an accepted offer has what the session needs, and whatever
//! the stack refuses is the offer's fault (a 4xx), never the server's (a 5xx).

#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Instant;

use bridge::rtc::peer::{Peer, dtls_certificate};
use libfuzzer_sys::fuzz_target;
use loadgen::rtc::peer_connection::certificate::RTCCertificate;

fn certificate() -> &'static RTCCertificate {
    static CERTIFICATE: OnceLock<RTCCertificate> = OnceLock::new();
    // Generating a certificate does not depend on the input; failing to is a broken build.
    CERTIFICATE.get_or_init(|| dtls_certificate().expect("a DTLS certificate"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(offer) = bridge::whip::offer::Offer::parse(data) else {
        return;
    };
    assert!(!offer.credentials.ufrag.is_empty() && !offer.credentials.pwd.is_empty());
    assert!(offer.audio_mid.is_some() || offer.video_mid.is_some());
    assert!(!offer.first_mid.is_empty());
    assert!(offer.video_layers >= 1);
    let addr = SocketAddr::from(([127, 0, 0, 1], 40_000));
    if let Err(err) = Peer::answer(offer, &[addr.ip()], addr, addr, certificate(), Instant::now()) {
        assert!(err.is_offer_fault(), "a server fault on client input: {err}");
    }
});
