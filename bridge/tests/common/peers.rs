//! The real peers: where they are, whether they are installed, and how FFmpeg 9 publishes; and
//! Debian's ffprobe/ffmpeg reading back the HLS that the bridge made of a publish.
// Each test binary compiles this module on its own and uses only part of it; what one binary
// leaves unused is dead code there, though another uses it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use super::binary::TOKEN;
use super::proc::{output, succeeds};

/// How long each publisher streams.
pub(crate) const PUBLISH_SECS: u32 = 6;

pub(crate) fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

/// FFmpeg 9 from the imageio-ffmpeg wheel, if it has the WHIP muxer.
pub(crate) fn ffmpeg_whip() -> Option<PathBuf> {
    let path = output(Command::new("python3").args([
        "-c",
        "import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())",
    ]))
    .ok()?;
    let path = PathBuf::from(path.trim());
    let muxers = output(Command::new(&path).args(["-hide_banner", "-muxers"])).ok()?;
    muxers
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("whip"))
        .then_some(path)
}

pub(crate) fn aiortc_available() -> bool {
    succeeds(Command::new("python3").args(["-c", "import aiortc, av"]))
}

pub(crate) fn chromium_path() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// Node with playwright-core, the WHIP client library and hls.js resolvable from the interop
/// folder (`npm ci` in `bridge/tests/interop/`, where `package.json` is, installs them all).
pub(crate) fn node_modules_available() -> bool {
    succeeds(
        Command::new("node")
            .args([
                "-e",
                "require.resolve('playwright-core'); require.resolve('@binbat/whip-whep/whip.js'); \
                 require.resolve('hls.js/dist/hls.min.js')",
            ])
            .current_dir(interop_dir()),
    )
}

/// FFmpeg 9 publishing `secs` of test pattern + tone over WHIP: libx264 baseline with a keyframe a
/// second, libopus, Bearer token. Paced like a camera: no initial burst, and no catching up
/// faster than real time after the encoder's slow start (`-re` alone sends 5 % fast for a
/// while, which a player at the live edge sees as latency growing).
pub(crate) fn ffmpeg_publish(ffmpeg: &Path, url: &str, secs: u32) -> Command {
    let mut cmd = Command::new(ffmpeg);
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "verbose", "-re"])
        .args(["-readrate_initial_burst", "0", "-readrate_catchup", "1"])
        .args(["-f", "lavfi", "-i", "testsrc=size=640x360:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", &secs.to_string()])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-tune",
            "zerolatency",
        ])
        .args([
            "-profile:v",
            "baseline",
            "-g",
            "30",
            "-bf",
            "0",
            "-pix_fmt",
            "yuv420p",
        ])
        .args(["-c:a", "libopus", "-ar", "48000", "-ac", "2"])
        .args(["-authorization", TOKEN])
        .args(["-f", "whip", url]);
    cmd
}

/// Debian's `ffprobe -v error ARGS -of json URL` as JSON; fails the test on any error it prints.
fn ffprobe_json(args: &[&str], url: &str) -> serde_json::Value {
    let out = Command::new("/usr/bin/ffprobe")
        .args(["-v", "error"])
        .args(args)
        .args(["-of", "json", url])
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "ffprobe {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Debian's `ffprobe` of an HLS playlist (a URL or a file): stream codecs (sorted) and duration;
/// fails the test on any error it prints.
pub(crate) fn probe_playlist(url: &str) -> (Vec<String>, f64) {
    let json = ffprobe_json(&["-show_streams", "-show_format"], url);
    let mut codecs: Vec<String> = json["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["codec_name"].as_str().unwrap_or("?").to_owned())
        .collect();
    codecs.sort();
    let duration = json["format"]["duration"]
        .as_str()
        .unwrap_or("0")
        .parse()
        .unwrap();
    (codecs, duration)
}

/// Debian's `ffmpeg -v error -i URL -enc_time_base -1 -f null -` of an HLS playlist: what it
/// printed (and its exit status when not 0). Empty when every segment was fetched and every frame
/// decoded with strictly increasing timestamps. `-enc_time_base -1` keeps the input's 90 kHz: by
/// default the null output counts in frames of the rate ffmpeg guesses, and a live source's
/// uneven frame times (29.58 fps guessed for GStreamer's 30) put two frames in one such slot,
/// which it reports as "non monotonically increasing dts" of a stream that has none.
pub(crate) fn playlist_decode_errors(url: &str) -> String {
    let out = Command::new("/usr/bin/ffmpeg")
        .args(["-nostdin", "-v", "error", "-i", url])
        .args(["-enc_time_base", "-1", "-f", "null", "-"])
        .output()
        .unwrap();
    let mut errors = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        errors.push_str(&format!("\nexit {}", out.status));
    }
    errors
}

/// Width and height of the first video stream Debian's `ffprobe` finds in `url` (a recording, or
/// an HLS playlist as a file or URL); fails the test on any error it prints.
pub(crate) fn video_size(url: &str) -> (u64, u64) {
    let json = ffprobe_json(
        &[
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=width,height",
        ],
        url,
    );
    let stream = &json["streams"][0];
    match (stream["width"].as_u64(), stream["height"].as_u64()) {
        (Some(width), Some(height)) => (width, height),
        _ => panic!("no video stream in {url}: {json}"),
    }
}
