//! Helpers for the unit tests, in one place: the captured files under `bridge/tests/data/` (see
//! its README) as units and frames, and the ffmpeg and ffprobe that check what the muxers write.
//! Test support only (`cfg(test)` or the `test-support` feature): a failed read or tool is a
//! failed test, so unwrapping is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;

use crate::media::h264::{NAL_IDR, annexb};
use crate::media::unit::{AudioFrame, VideoUnit};

/// 2 s of x264 baseline 640x360 at 30 fps, two slices a picture, an IDR every 30 pictures.
/// Compiled in, so that tests can tell its memory from copies.
pub static H264: &[u8] = include_bytes!("../../tests/data/x264-baseline-640x360-2s.h264");
/// 2 s of AAC-LC 48 kHz stereo in ADTS (no CRC) from ffmpeg 9's encoder.
pub static ADTS: &[u8] = include_bytes!("../../tests/data/hls-aac-lc-48k-stereo-2s.adts");
/// The AudioSpecificConfig of [`ADTS`]: AAC-LC (2), 48 kHz (index 3), stereo (2).
pub const ASC: [u8; 2] = [0x11, 0x90];

/// The 60 access units of [`H264`] (slices of it), 30 fps from `pts0`:
/// `pts = dts = pts0 + n * 3000`.
pub fn video_units(pts0: i64) -> Vec<VideoUnit> {
    annexb::access_units(annexb::split(&Bytes::from_static(H264)))
        .into_iter()
        .enumerate()
        .map(|(n, nalus)| {
            let pts = pts0 + n as i64 * 3000;
            VideoUnit {
                pts,
                dts: pts,
                keyframe: nalus.iter().any(|n| n[0] & 0x1f == NAL_IDR),
                nalus: nalus.into(),
            }
        })
        .collect()
}

/// The raw AAC frames of [`ADTS`] (slices of it), 1024 samples each: `pts = n * 1920`.
pub fn aac_frames() -> Vec<AudioFrame> {
    crate::media::aac::split_adts(&Bytes::from_static(ADTS))
        .expect("whole ADTS frames")
        .into_iter()
        .enumerate()
        .map(|(n, data)| AudioFrame {
            pts: n as i64 * 1920,
            duration: 1920,
            data,
        })
        .collect()
}

/// A file under `bridge/tests/data/`.
pub fn read(name: &str) -> Bytes {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data")
        .join(name);
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// The packets of a single-stream Ogg file, read by [`crate::media::ogg::packets`] (which
/// checks every page); panics if the file is not one.
pub fn ogg_packets(data: &[u8]) -> Vec<Bytes> {
    crate::media::ogg::packets(data).unwrap_or_else(|e| panic!("{e}"))
}

/// An Ogg Opus file as the frames the transcoder takes (20 ms apart from `pts0`), with the
/// OpusHead's channel count and pre-skip.
#[derive(Debug)]
pub struct OggOpus {
    pub channels: u8,
    pub pre_skip: usize,
    pub frames: Vec<AudioFrame>,
}

pub fn ogg_opus(name: &str, pts0: i64) -> OggOpus {
    let packets = ogg_packets(&read(name));
    let head = &packets[0];
    assert_eq!(&head[..8], b"OpusHead");
    let mut pts = pts0;
    let frames = packets[2..]
        .iter()
        .map(|p| {
            let frame = crate::media::opus::audio_frame(p.clone(), pts).unwrap();
            pts += frame.duration;
            frame
        })
        .collect();
    OggOpus {
        channels: head[9],
        pre_skip: usize::from(u16::from_le_bytes([head[10], head[11]])),
        frames,
    }
}

/// Little-endian 16-bit PCM.
pub fn s16le(data: &[u8]) -> Vec<i16> {
    data.chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect()
}

/// Signal-to-noise ratio of `test` against `reference` in dB, over the shorter length.
pub fn snr_db(reference: &[i16], test: &[i16]) -> f64 {
    let (mut signal, mut noise) = (0f64, 0f64);
    for (&r, &t) in reference.iter().zip(test) {
        let (r, t) = (f64::from(r), f64::from(t));
        signal += r * r;
        noise += (r - t) * (r - t);
    }
    10.0 * (signal / noise.max(1e-9)).log10()
}

/// Bytes from hex digits, whitespace ignored (`"67 42c0"`): readable byte literals in tests.
pub fn hex(s: &str) -> Bytes {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// High profile (100) and High 4:4:4 Predictive (244) SPS and PPS of one-frame 64x64 x264
/// streams, for tests of what depends on the profile (the avcC extension).
pub const HIGH_SPS: &str = "6764000aacd94426c044000003000400000300f03c489658";
/// The PPS that goes with [`HIGH_SPS`].
pub const HIGH_PPS: &str = "68ebe3cb22c0";
/// See [`HIGH_SPS`].
pub const HIGH444_SPS: &str = "67f4000a919b2884d80880000003008000001e078912cb";
/// The PPS that goes with [`HIGH444_SPS`].
pub const HIGH444_PPS: &str = "68ebe3c44844";

/// A xorshift64 generator (Marsaglia): the same numbers for the same (nonzero) seed on every run,
/// for the tests that feed random input.
pub fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

// ---------------------------------------------------------------------------------------------
// Tools from the environment: the RTMP and transcoder tests.

/// An ffmpeg to check output with: `$FFMPEG`, else `ffmpeg` on the PATH. `None` (and the test
/// prints SKIPPED) when there is none.
pub fn ffmpeg() -> Option<PathBuf> {
    env_tool("FFMPEG", "ffmpeg")
}

/// FFmpeg 9 (`$FFMPEG9`, else the imageio-ffmpeg wheel's binary), for what Debian's 5.1 cannot
/// read (Enhanced RTMP audio).
pub fn ffmpeg9() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("FFMPEG9") {
        let path = PathBuf::from(path);
        return path.is_file().then_some(path);
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())",
        ])
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    (out.status.success() && path.is_file()).then_some(path)
}

/// Like [`ffmpeg`], for ffprobe (`$FFPROBE`).
pub fn ffprobe() -> Option<PathBuf> {
    env_tool("FFPROBE", "ffprobe")
}

fn env_tool(var: &str, name: &str) -> Option<PathBuf> {
    let path = std::env::var_os(var).map_or_else(|| PathBuf::from(name), PathBuf::from);
    let ok = Command::new(&path)
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(path)
}

/// Runs a tool and returns what it printed (stdout, stderr).
pub fn run(tool: &PathBuf, args: &[&str]) -> (String, String) {
    let out = Command::new(tool).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{} {args:?} failed: {out:?}",
        tool.display()
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A path for a scratch file (removed by the caller if it likes; under the target dir's tmp).
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bridge-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

// ---------------------------------------------------------------------------------------------
// Debian's tools: the HLS muxer tests.

/// The Debian ffmpeg tool at `/usr/bin/<name>`, or `None` (with a SKIPPED line) when absent;
/// absence fails the test when `BRIDGE_REQUIRE_INTEROP=1`.
pub fn tool(name: &str) -> Option<PathBuf> {
    let path = Path::new("/usr/bin").join(name);
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var("BRIDGE_REQUIRE_INTEROP").as_deref() != Ok("1"),
        "{name} not found and BRIDGE_REQUIRE_INTEROP=1"
    );
    eprintln!("SKIPPED: {name} not found");
    None
}

/// A fresh directory under the system temp dir.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bridge-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Checks a file or playlist of [`video_units`] and `audio_frames` of [`aac_frames`] as ffprobe
/// and ffmpeg see it: H.264 640x360 and AAC-LC 48 kHz stereo, 60 pictures 1/30 s apart and the
/// audio frames 1024/48000 s apart, both from `start` s; decoded without a word.
pub fn check_plays(ffprobe: &Path, ffmpeg: &Path, path: &Path, start: f64, audio_frames: usize) {
    let file = path.display();
    let json = probe(ffprobe, path);
    let streams = json["streams"].as_array().unwrap();
    let video = streams.iter().find(|s| s["codec_type"] == "video").unwrap();
    assert_eq!(video["codec_name"], "h264", "{file}");
    assert_eq!(
        (video["width"].as_i64(), video["height"].as_i64()),
        (Some(640), Some(360))
    );
    let audio = streams.iter().find(|s| s["codec_type"] == "audio").unwrap();
    assert_eq!(audio["codec_name"], "aac", "{file}");
    assert_eq!(audio["profile"], "LC");
    assert_eq!(audio["sample_rate"], "48000");
    assert_eq!(audio["channels"], 2);
    check_packets(&packet_times(&json, "video"), 60, start, 1.0 / 30.0);
    check_packets(
        &packet_times(&json, "audio"),
        audio_frames,
        start,
        1024.0 / 48_000.0,
    );
    assert_eq!(decode(ffmpeg, path), "", "{file}");
}

/// `ffprobe -show_streams -show_packets` of a file, as JSON.
fn probe(ffprobe: &Path, file: &Path) -> serde_json::Value {
    let out = Command::new(ffprobe)
        .args([
            "-v",
            "error",
            "-show_streams",
            "-show_packets",
            "-of",
            "json",
        ])
        .arg(file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.is_empty(),
        "ffprobe: {stderr}"
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Decodes a file with ffmpeg; returns what it printed (nothing when all is well).
fn decode(ffmpeg: &Path, file: &Path) -> String {
    let out = Command::new(ffmpeg)
        .args(["-v", "error", "-i"])
        .arg(file)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    assert!(out.status.success(), "ffmpeg failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Per stream type: `(pts, duration)` of each packet in seconds, from ffprobe's output.
fn packet_times(probe: &serde_json::Value, kind: &str) -> Vec<(f64, f64)> {
    let index = probe["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["codec_type"] == kind)
        .map(|s| s["index"].as_i64().unwrap())
        .unwrap_or_else(|| panic!("no {kind} stream"));
    let num = |v: &serde_json::Value| v.as_str().unwrap().parse::<f64>().unwrap();
    probe["packets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["stream_index"].as_i64() == Some(index))
        .map(|p| (num(&p["pts_time"]), num(&p["duration_time"])))
        .collect()
}

/// Checks a stream's packets: `count` of them, each `step` s after the one before and lasting
/// it (within a millisecond), the first at `start`.
fn check_packets(times: &[(f64, f64)], count: usize, start: f64, step: f64) {
    assert_eq!(times.len(), count);
    for (n, &(pts, duration)) in times.iter().enumerate() {
        let want = start + n as f64 * step;
        assert!(
            (pts - want).abs() < 1e-3,
            "packet {n}: pts {pts} want {want}"
        );
        assert!(
            (duration - step).abs() < 1e-3,
            "packet {n}: duration {duration}"
        );
    }
}

/// A one-NAL video unit at `dts` (pts = dts), for timing tests that never decode it.
pub fn timed_video(dts: i64, keyframe: bool) -> crate::media::unit::Unit {
    crate::media::unit::Unit::Video(crate::media::unit::VideoUnit {
        pts: dts,
        dts,
        keyframe,
        nalus: [Bytes::from_static(&[0x65, 0x88])].into_iter().collect(),
    })
}

/// A one-byte audio frame at `pts` lasting `duration` ticks, for timing tests.
pub fn timed_audio(pts: i64, duration: i64) -> crate::media::unit::Unit {
    crate::media::unit::Unit::Audio(crate::media::unit::AudioFrame {
        pts,
        duration,
        data: Bytes::from_static(&[0xfc]),
    })
}
