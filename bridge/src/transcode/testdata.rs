//! Test helpers: reading the captured files under `bridge/tests/data/` and finding ffmpeg.

use std::path::PathBuf;
use std::process::Command;

use bytes::Bytes;

use crate::media::unit::{AudioFrame, VideoUnit};

/// A file under `bridge/tests/data/`.
pub(crate) fn read(name: &str) -> Bytes {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// The packets of a single-stream Ogg file (RFC 3533): pages are `OggS`, 22 more header bytes, a
/// segment count and table, then the segments; a packet ends at a segment shorter than 255.
pub(crate) fn ogg_packets(data: &[u8]) -> Vec<Bytes> {
    let mut packets = Vec::new();
    let mut current = Vec::new();
    let mut at = 0;
    while at < data.len() {
        assert_eq!(&data[at..at + 4], b"OggS", "page at {at}");
        let segments = usize::from(data[at + 26]);
        let table = &data[at + 27..at + 27 + segments];
        let mut body = at + 27 + segments;
        for &len in table {
            current.extend_from_slice(&data[body..body + usize::from(len)]);
            body += usize::from(len);
            if len < 255 {
                packets.push(Bytes::from(std::mem::take(&mut current)));
            }
        }
        at = body;
    }
    packets
}

/// An Ogg Opus file as the frames the transcoder takes (20 ms apart from `pts0`), with the
/// OpusHead's channel count and pre-skip.
pub(crate) struct OggOpus {
    pub(crate) channels: u8,
    pub(crate) pre_skip: usize,
    pub(crate) frames: Vec<AudioFrame>,
}

pub(crate) fn ogg_opus(name: &str, pts0: i64) -> OggOpus {
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
pub(crate) fn s16le(data: &[u8]) -> Vec<i16> {
    data.chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect()
}

/// Signal-to-noise ratio of `test` against `reference` in dB, over the shorter length.
pub(crate) fn snr_db(reference: &[i16], test: &[i16]) -> f64 {
    let (mut signal, mut noise) = (0f64, 0f64);
    for (&r, &t) in reference.iter().zip(test) {
        let (r, t) = (f64::from(r), f64::from(t));
        signal += r * r;
        noise += (r - t) * (r - t);
    }
    10.0 * (signal / noise.max(1e-9)).log10()
}

/// NAL units of an Annex B stream, as slices of one buffer.
pub(crate) fn annex_b_nals(data: &Bytes) -> Vec<Bytes> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i..i + 3] == [0, 0, 1] {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut nals = Vec::new();
    for (k, &start) in starts.iter().enumerate() {
        let mut end = starts.get(k + 1).map_or(data.len(), |&next| next - 3);
        while end > start && data[end - 1] == 0 {
            end -= 1;
        }
        nals.push(data.slice(start..end));
    }
    nals
}

/// The test H.264 file as access units, 30 fps from `pts0`: a unit starts at an AUD, SEI or
/// parameter set, or at a slice with `first_mb_in_slice` 0, once the current one has a slice.
pub(crate) fn h264_units(name: &str, pts0: i64) -> Vec<VideoUnit> {
    let mut units: Vec<Vec<Bytes>> = Vec::new();
    let mut current: Vec<Bytes> = Vec::new();
    let mut has_slice = false;
    for nal in annex_b_nals(&read(name)) {
        let t = nal[0] & 0x1f;
        let first_slice = matches!(t, 1 | 5) && nal.get(1).is_some_and(|b| b & 0x80 != 0);
        if has_slice && (matches!(t, 6..=9) || first_slice) {
            units.push(std::mem::take(&mut current));
            has_slice = false;
        }
        has_slice |= matches!(t, 1..=5);
        current.push(nal);
    }
    units.push(current);
    units
        .into_iter()
        .enumerate()
        .map(|(i, nalus)| VideoUnit {
            pts: pts0 + i as i64 * 3000,
            dts: pts0 + i as i64 * 3000,
            keyframe: nalus.iter().any(|n| n[0] & 0x1f == 5),
            nalus,
        })
        .collect()
}

/// An ffmpeg to check output with: `$FFMPEG`, else `ffmpeg` on the PATH. `None` (and the test
/// prints SKIPPED) when there is none.
pub(crate) fn ffmpeg() -> Option<PathBuf> {
    tool("FFMPEG", "ffmpeg")
}

/// FFmpeg 9 (`$FFMPEG9`, else the imageio-ffmpeg wheel's binary), for what Debian's 5.1 cannot
/// read (Enhanced RTMP audio).
pub(crate) fn ffmpeg9() -> Option<PathBuf> {
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
pub(crate) fn ffprobe() -> Option<PathBuf> {
    tool("FFPROBE", "ffprobe")
}

fn tool(var: &str, name: &str) -> Option<PathBuf> {
    let path = std::env::var_os(var).map_or_else(|| PathBuf::from(name), PathBuf::from);
    let ok = Command::new(&path)
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(path)
}

/// Runs a tool and returns what it printed (stdout, stderr).
pub(crate) fn run(tool: &PathBuf, args: &[&str]) -> (String, String) {
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
pub(crate) fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bridge-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}
