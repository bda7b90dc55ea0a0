//! The HLS path without IO: the LL-HLS segmenter cutting 2 s of real units into 1 s segments of
//! 200 ms parts, and the muxers: fMP4 (one fragment per part the segmenter made) and MPEG-TS
//! (one PES per picture, the audio since the last picture in one PES).
//!
//! Input: the x264 stream of `bridge/tests/data/x264-baseline-640x360-2s.h264` (640x360 baseline,
//! 30 fps, two slices a picture) and 2 s of AAC-LC 48 kHz stereo from
//! `bridge/tests/data/hls-aac-lc-48k-stereo-2s.adts`, as `bridge/tests/data/README.md` says.

use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

mod common;

use bridge_proto::media::unit::{AudioFrame, Unit, VideoUnit};
use bridge_proto::mux::hls::fmp4::{
    AacConfig, AudioParams, Fmp4Muxer, FragmentSamples, VideoParams,
};
use bridge_proto::mux::hls::segmenter::{Event, Segmenter, SegmenterConfig};
use bridge_proto::mux::hls::ts::TsMuxer;
use bridge_proto::testdata::{ASC, aac_frames};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// Video and audio merged in time order, as a session hands them to its HLS output.
fn arrival_order(units: &[VideoUnit], frames: &[AudioFrame]) -> Vec<Unit> {
    let mut merged: Vec<Unit> = units
        .iter()
        .cloned()
        .map(Unit::Video)
        .chain(frames.iter().cloned().map(Unit::Audio))
        .collect();
    merged.sort_by_key(|u| match u {
        Unit::Video(v) => v.dts,
        Unit::Audio(a) => a.pts,
    });
    merged
}

/// Cuts the stream as the bridge's LL-HLS output does; returns the events.
fn run_segmenter(units: Vec<Unit>) -> Vec<Event> {
    let mut segmenter = Segmenter::new(SegmenterConfig::low_latency(true))
        .unwrap_or_else(|e| panic!("segmenter: {e}"));
    let mut events = Vec::new();
    for unit in units {
        segmenter.push(unit);
        events.extend(std::iter::from_fn(|| segmenter.poll_event()));
    }
    segmenter.finish();
    events.extend(std::iter::from_fn(|| segmenter.poll_event()));
    events
}

/// One part's tracks, with where each ends.
struct Part {
    video: Vec<VideoUnit>,
    video_end: Option<i64>,
    audio: Vec<AudioFrame>,
    audio_end: Option<i64>,
}

/// The segmenter's parts, split by track for the fMP4 muxer.
fn parts(units: &[Unit]) -> Vec<Part> {
    run_segmenter(units.to_vec())
        .into_iter()
        .filter_map(|event| match event {
            Event::PartReady(part) => {
                let (video_end, audio_end) = (part.video_end, part.audio_end);
                let (video, audio) = part.into_tracks();
                Some(Part {
                    video,
                    video_end,
                    audio,
                    audio_end,
                })
            }
            _ => None,
        })
        .collect()
}

/// Muxes every part; returns the bytes written.
fn run_fmp4(parts: &[Part], video: &VideoParams, audio: &AudioParams) -> usize {
    let mut muxer = Fmp4Muxer::new(Some(video.clone()), Some(audio.clone()))
        .unwrap_or_else(|e| panic!("tracks: {e}"));
    let mut bytes = muxer.init().len();
    for part in parts {
        let chunks = muxer
            .fragment(FragmentSamples {
                video: &part.video,
                video_end: part.video_end,
                audio: &part.audio,
                audio_end: part.audio_end,
            })
            .unwrap_or_else(|e| panic!("fragment: {e}"));
        bytes += std::hint::black_box(chunks)
            .iter()
            .map(Bytes::len)
            .sum::<usize>();
    }
    bytes
}

/// Muxes the stream as 1 s TS segments, audio grouped per picture; returns the bytes written.
fn run_ts(units: &[VideoUnit], frames: &[AudioFrame], config: &AacConfig) -> usize {
    let mut muxer = TsMuxer::new(true, Some(config)).unwrap_or_else(|e| panic!("tracks: {e}"));
    let mut bytes = 0;
    let mut next_audio = 0;
    for unit in units {
        if unit.keyframe {
            bytes += muxer.segment_start().len();
        }
        let count = frames[next_audio..]
            .iter()
            .take_while(|f| f.pts <= unit.dts)
            .count();
        let audio = muxer
            .audio(&frames[next_audio..next_audio + count])
            .unwrap_or_else(|e| panic!("audio: {e}"));
        next_audio += count;
        bytes += std::hint::black_box(audio).len();
        bytes +=
            std::hint::black_box(muxer.video(unit).unwrap_or_else(|e| panic!("video: {e}"))).len();
    }
    bytes
        + muxer
            .audio(&frames[next_audio..])
            .unwrap_or_else(|e| panic!("audio: {e}"))
            .len()
}

fn hls_mux(c: &mut Criterion) {
    let units = common::video_units();
    let frames = aac_frames();
    let merged = arrival_order(&units, &frames);
    let parts = parts(&merged);
    let config = AacConfig::parse(&ASC).unwrap_or_else(|e| panic!("AAC-LC config: {e}"));
    let video = VideoParams::from_unit(&units[0]).unwrap_or_else(|e| panic!("parameter sets: {e}"));
    let audio = AudioParams::Aac(config.clone());
    let input: usize = units
        .iter()
        .flat_map(|u| &u.nalus)
        .map(Bytes::len)
        .sum::<usize>()
        + frames.iter().map(|f| f.data.len()).sum::<usize>();
    let elements = (units.len() + frames.len()) as u64;

    // Allocations are counted, not timed: the same on any machine.
    for (name, run) in [
        (
            "fmp4",
            &(|| run_fmp4(&parts, &video, &audio)) as &dyn Fn() -> usize,
        ),
        ("ts", &|| run_ts(&units, &frames, &config)),
    ] {
        let region = Region::new(GLOBAL);
        let output = run();
        let stats = region.change();
        eprintln!(
            "hls_mux {name}: {} pictures + {} audio frames, {input} payload bytes -> {output} bytes \
             ({:+.2}% overhead); {:.2} allocations/frame, {:.0} bytes allocated/frame",
            units.len(),
            frames.len(),
            (output as f64 / input as f64 - 1.0) * 100.0,
            stats.allocations as f64 / elements as f64,
            stats.bytes_allocated as f64 / elements as f64,
        );
    }

    // The segmenter moves units, as the bridge does: its input is cloned outside the count.
    let input_units = merged.clone();
    let region = Region::new(GLOBAL);
    let events = run_segmenter(input_units);
    let stats = region.change();
    eprintln!(
        "hls_mux segmenter: {} units -> {} parts in {} segments; {:.2} allocations/unit, {:.0} \
         bytes allocated/unit",
        merged.len(),
        events
            .iter()
            .filter(|e| matches!(e, Event::PartReady(_)))
            .count(),
        events
            .iter()
            .filter(|e| matches!(e, Event::SegmentReady(_)))
            .count(),
        stats.allocations as f64 / merged.len() as f64,
        stats.bytes_allocated as f64 / merged.len() as f64,
    );

    let mut group = c.benchmark_group("hls_mux");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(elements));
    group.bench_function("fmp4_frames", |b| {
        b.iter(|| run_fmp4(std::hint::black_box(&parts), &video, &audio))
    });
    group.bench_function("ts_frames", |b| {
        b.iter(|| run_ts(std::hint::black_box(&units), &frames, &config))
    });
    group.bench_function("segmenter_frames", |b| {
        b.iter_batched(|| merged.clone(), run_segmenter, BatchSize::SmallInput)
    });
    group.throughput(Throughput::Bytes(input as u64));
    group.bench_function("fmp4_bytes", |b| {
        b.iter(|| run_fmp4(std::hint::black_box(&parts), &video, &audio))
    });
    group.bench_function("ts_bytes", |b| {
        b.iter(|| run_ts(std::hint::black_box(&units), &frames, &config))
    });
    group.finish();
}

criterion_group!(benches, hls_mux);
criterion_main!(benches);
