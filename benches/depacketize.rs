//! The video packet path without IO: RTP packets through the reorder buffer and the H.264
//! depacketizer into access units.
//!
//! Input: 2 s of real x264 output (640x360 baseline, two slices per picture, as
//! `bridge/tests/data/README.md` says), packetized here the way browsers do it: parameter sets
//! aggregated in STAP-A, slices over 1200 bytes cut into FU-A, the rest single NAL packets.

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

mod common;

use bridge_proto::media::h264::Depacketizer;
use bridge_proto::media::reorder::{ReorderBuffer, ReorderConfig};
use bridge_proto::media::rtp::RtpPacket;

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

const MTU: usize = 1200;

fn packetize(units: &[Vec<Bytes>]) -> Vec<RtpPacket> {
    let mut packets = Vec::new();
    let mut seq = 65_500u16; // wraps during the run
    for (i, nals) in units.iter().enumerate() {
        let timestamp = 3_000 * i as u32;
        let mut payloads: Vec<Bytes> = Vec::new();
        let mut aggregate: Vec<&Bytes> = Vec::new();
        let flush = |aggregate: &mut Vec<&Bytes>, payloads: &mut Vec<Bytes>| {
            match aggregate.as_slice() {
                [] => {}
                [one] => payloads.push((*one).clone()),
                many => {
                    let mut stap = vec![24 | (many[0][0] & 0x60)];
                    for nal in many {
                        stap.extend_from_slice(&(nal.len() as u16).to_be_bytes());
                        stap.extend_from_slice(nal);
                    }
                    payloads.push(Bytes::from(stap));
                }
            }
            aggregate.clear();
        };
        for nal in nals {
            if nal.len() > MTU {
                flush(&mut aggregate, &mut payloads);
                let body = &nal[1..];
                let pieces = body.len().div_ceil(MTU - 2);
                let size = body.len().div_ceil(pieces);
                let count = body.chunks(size).count();
                for (k, piece) in body.chunks(size).enumerate() {
                    let mut header = nal[0] & 0x1f;
                    if k == 0 {
                        header |= 0x80;
                    }
                    if k + 1 == count {
                        header |= 0x40;
                    }
                    let mut fu = vec![(nal[0] & 0xe0) | 28, header];
                    fu.extend_from_slice(piece);
                    payloads.push(Bytes::from(fu));
                }
            } else {
                let held: usize = aggregate.iter().map(|n| n.len() + 2).sum();
                if 1 + held + 2 + nal.len() > MTU {
                    flush(&mut aggregate, &mut payloads);
                }
                aggregate.push(nal);
            }
        }
        flush(&mut aggregate, &mut payloads);
        let last = payloads.len() - 1;
        for (k, payload) in payloads.into_iter().enumerate() {
            packets.push(RtpPacket::new(0x5eed, seq, timestamp, k == last, payload));
            seq = seq.wrapping_add(1);
        }
    }
    packets
}

/// Runs every packet through a fresh reorder buffer and depacketizer; returns frames out.
fn run(packets: &[RtpPacket], arrival: &[Instant]) -> usize {
    let mut reorder = ReorderBuffer::new(ReorderConfig::default());
    let mut depacketizer = Depacketizer::new();
    let mut frames = 0;
    for (packet, &now) in packets.iter().zip(arrival) {
        let _ = reorder.push(packet.clone(), now);
        while let Some(packet) = reorder.pop(now) {
            let _ = depacketizer.push(&packet);
            while let Some(frame) = depacketizer.pull() {
                frames += std::hint::black_box(frame).nalus.len().min(1);
            }
        }
    }
    frames
}

fn depacketize(c: &mut Criterion) {
    let units = common::access_units();
    let in_order = packetize(&units);
    let bytes: u64 = in_order.iter().map(|p| p.payload.len() as u64).sum();
    let start = Instant::now();
    // Spread over the stream's 2 s, as a publisher paces them.
    let spacing = Duration::from_secs(2) / in_order.len() as u32;
    let arrival: Vec<Instant> = (0..in_order.len() as u32)
        .map(|i| start + spacing * i)
        .collect();
    // One pair in twenty swapped: the reorder buffer holds one packet back each time. (Not the
    // first pair: a stream's first packet sets where it starts, and one before it is late.)
    let mut reordered = in_order.clone();
    for pair in reordered[10..].chunks_mut(20) {
        if pair.len() > 1 {
            pair.swap(0, 1);
        }
    }
    assert_eq!(run(&in_order, &arrival), units.len());
    assert_eq!(run(&reordered, &arrival), units.len());

    // Allocations are counted, not timed: the same on any machine. The input packets' own
    // clones are `Bytes` refcount bumps; what is left is FU-A reassembly and per-frame vectors.
    // What a fresh reorder buffer and depacketizer allocate once, apart from the steady state.
    let setup = Region::new(GLOBAL);
    std::hint::black_box((
        ReorderBuffer::new(ReorderConfig::default()),
        Depacketizer::new(),
    ));
    let setup = setup.change().allocations;
    // FU-A NAL units: each is reassembled into one buffer of its own (one allocation).
    let fu_a = in_order
        .iter()
        .filter(|p| p.payload.len() > 1 && p.payload[0] & 0x1f == 28 && p.payload[1] & 0x80 != 0)
        .count();
    let region = Region::new(GLOBAL);
    run(&in_order, &arrival);
    let stats = region.change();
    let n = in_order.len() as f64;
    let steady = stats.allocations.saturating_sub(setup);
    eprintln!(
        "depacketize: {} packets, {} frames, {fu_a} FU-A NAL units: {steady} allocations in steady \
         state ({:.2} a packet; {setup} more to set up), {:.0} bytes allocated/packet ({:.0} \
         payload bytes/packet)",
        in_order.len(),
        units.len(),
        steady as f64 / n,
        stats.bytes_allocated as f64 / n,
        bytes as f64 / n,
    );

    let mut group = c.benchmark_group("depacketize");
    group.throughput(Throughput::Elements(in_order.len() as u64));
    group.bench_function("packets_in_order", |b| {
        b.iter(|| run(std::hint::black_box(&in_order), &arrival))
    });
    group.bench_function("packets_reordered", |b| {
        b.iter(|| run(std::hint::black_box(&reordered), &arrival))
    });
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function("bytes_in_order", |b| {
        b.iter(|| run(std::hint::black_box(&in_order), &arrival))
    });
    group.finish();
}

criterion_group!(benches, depacketize);
criterion_main!(benches);
