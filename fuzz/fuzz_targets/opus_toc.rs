//! Arbitrary bytes as an Opus packet: a packet that parses plays 2.5 to 120 ms.

#![no_main]

use libfuzzer_sys::fuzz_target;

use bridge_proto::media::opus::{MAX_PACKET_SAMPLES, OpusPacket};

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = OpusPacket::parse(data) {
        assert!((120..=MAX_PACKET_SAMPLES).contains(&packet.samples()));
        assert!(packet.timeline_duration() > 0);
    }
});
