//! Arbitrary packets (arrival jitter, loss, duplicates, garbage payloads) through the reorder
//! buffer and the H.264 depacketizer: nothing may panic, and every emitted unit must be whole.
//!
//! Input: a sequence of records `[seq_lo, seq_hi, ts_step, flags, advance_ms, len, payload...]`.

#![no_main]

use std::time::{Duration, Instant};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

use bridge_proto::media::h264::Depacketizer;
use bridge_proto::media::reorder::{ReorderBuffer, ReorderConfig};
use bridge_proto::media::rtp::RtpPacket;

fuzz_target!(|data: &[u8]| {
    let start = Instant::now();
    let mut now = start;
    let mut reorder = ReorderBuffer::new(ReorderConfig {
        max_delay: Duration::from_millis(100),
        max_packets: 64,
    });
    let mut depacketizer = Depacketizer::new();
    let mut timestamp = 0u32;
    let mut rest = data;
    while let [seq_lo, seq_hi, ts_step, flags, advance, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (payload, tail) = tail.split_at(len);
        rest = tail;
        timestamp = timestamp.wrapping_add(u32::from(*ts_step) * 300);
        now += Duration::from_millis(u64::from(*advance));
        let packet = RtpPacket::new(
            if flags & 0x80 != 0 { 2 } else { 1 },
            u16::from_le_bytes([*seq_lo, *seq_hi]),
            timestamp,
            flags & 1 != 0,
            Bytes::copy_from_slice(payload),
        );
        let _ = reorder.push(packet, now);
        while let Some(packet) = reorder.pop(now) {
            let _ = depacketizer.push(&packet);
            drain(&mut depacketizer);
        }
        if let Some(deadline) = reorder.deadline() {
            assert!(deadline <= now + Duration::from_millis(100));
        }
    }
    while let Some(packet) = reorder.flush() {
        let _ = depacketizer.push(&packet);
        drain(&mut depacketizer);
    }
});

fn drain(depacketizer: &mut Depacketizer) {
    while let Some(frame) = depacketizer.pull() {
        assert!(frame.nalus.iter().all(|n| !n.is_empty()));
        if frame.keyframe {
            let types: Vec<u8> = frame.nalus.iter().map(|n| n[0] & 0x1f).collect();
            assert!(types.contains(&7) && types.contains(&8) && types.contains(&5));
        }
    }
}
