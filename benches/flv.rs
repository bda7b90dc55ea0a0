//! The RTMP output path without IO: H.264 units and AAC frames into FLV tag bodies, and the Opus
//! to AAC transcoder that feeds the audio.
//!
//! Input: 2 s of real x264 output (640x360 baseline, two slices per picture) and 1 s of stereo
//! Opus from libopus at 96 kb/s (`bridge/tests/data/README.md` says how both were made).

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

mod common;

use bridge::transcode::{DEFAULT_BITRATE, OpusToAac};
use bridge_proto::media::unit::{AudioFrame, VideoUnit};
use bridge_proto::mux::flv::{AudioCodec, FlvMuxer};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

const OPUS: &[u8] = include_bytes!("../bridge/tests/data/opus-music-stereo-96k.ogg");

/// The Opus packets of the Ogg file (RFC 3533 pages), 20 ms apart, headers skipped.
fn opus_frames() -> Vec<AudioFrame> {
    let mut packets = Vec::new();
    let mut current = Vec::new();
    let mut at = 0;
    while at + 27 <= OPUS.len() {
        let segments = usize::from(OPUS[at + 26]);
        let mut body = at + 27 + segments;
        for &len in &OPUS[at + 27..at + 27 + segments] {
            current.extend_from_slice(&OPUS[body..body + usize::from(len)]);
            body += usize::from(len);
            if len < 255 {
                packets.push(Bytes::from(std::mem::take(&mut current)));
            }
        }
        at = body;
    }
    packets
        .into_iter()
        .skip(2)
        .enumerate()
        .map(|(i, data)| AudioFrame {
            pts: 1_800 * i as i64,
            duration: 1_800,
            data,
        })
        .collect()
}

fn transcode(frames: &[AudioFrame], t: &mut OpusToAac) -> Vec<AudioFrame> {
    let mut out = Vec::new();
    for f in frames {
        out.extend(t.push(f).unwrap_or_else(|e| panic!("transcode: {e}")));
    }
    out
}

fn mux_video(units: &[VideoUnit]) -> usize {
    let mut mux = FlvMuxer::new(None);
    let mut bytes = 0;
    for u in units {
        for tag in mux.video(u).unwrap_or_else(|e| panic!("mux: {e}")) {
            bytes += std::hint::black_box(tag).body.len();
        }
    }
    bytes
}

fn mux_audio(frames: &[AudioFrame], codec: &AudioCodec) -> usize {
    let mut mux = FlvMuxer::new(Some(codec.clone()));
    let mut bytes = 0;
    for f in frames {
        for tag in mux.audio(f) {
            bytes += std::hint::black_box(tag).body.len();
        }
    }
    bytes
}

fn flv(c: &mut Criterion) {
    let units = common::video_units();
    let nal_bytes: u64 = units
        .iter()
        .flat_map(|u| &u.nalus)
        .map(|n| n.len() as u64)
        .sum();
    let opus = opus_frames();
    let mut t = OpusToAac::new(2, DEFAULT_BITRATE).unwrap_or_else(|e| panic!("transcoder: {e}"));
    let aac = transcode(&opus, &mut t);
    let codec = AudioCodec::Aac {
        audio_specific_config: t.audio_specific_config(),
    };

    let region = Region::new(GLOBAL);
    let out = mux_video(&units);
    let stats = region.change();
    eprintln!(
        "flv video: {} units, {nal_bytes} NAL bytes in, {out} tag bytes out: {:.2} allocations/unit, \
         {:.0} bytes allocated/unit",
        units.len(),
        stats.allocations as f64 / units.len() as f64,
        stats.bytes_allocated as f64 / units.len() as f64,
    );

    let mut group = c.benchmark_group("flv");
    group.throughput(Throughput::Elements(units.len() as u64));
    group.bench_function("video_units", |b| {
        b.iter(|| mux_video(std::hint::black_box(&units)))
    });
    group.throughput(Throughput::Bytes(nal_bytes));
    group.bench_function("video_bytes", |b| {
        b.iter(|| mux_video(std::hint::black_box(&units)))
    });
    group.throughput(Throughput::Elements(aac.len() as u64));
    group.bench_function("aac_frames", |b| {
        b.iter(|| mux_audio(std::hint::black_box(&aac), &codec))
    });
    group.finish();

    // 50 packets are one second of audio: packets/s divided by 50 is the real-time factor.
    let mut group = c.benchmark_group("transcode");
    group.throughput(Throughput::Elements(opus.len() as u64));
    group.bench_function("opus_to_aac_packets", |b| {
        b.iter_batched(
            || OpusToAac::new(2, DEFAULT_BITRATE).unwrap_or_else(|e| panic!("transcoder: {e}")),
            |mut t| transcode(std::hint::black_box(&opus), &mut t),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, flv);
criterion_main!(benches);
