//! nginx with the RTMP module as the ingest a legacy platform stands for: it records what the
//! bridge pushes (`record all`); ffprobe/ffmpeg judge the recordings. And nginx as an HTTP
//! reverse proxy putting several bridges behind one origin.
// Each test binary compiles this module on its own and uses only part of it; what one binary
// leaves unused is dead code there, though another uses it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::netns::Netns;
use super::proc::{Proc, Scratch};

pub(crate) const NGINX: &str = "/usr/sbin/nginx";
pub(crate) const RTMP_MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";
pub(crate) const STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

/// An nginx-rtmp ingest on 127.0.0.1:`port` recording every stream into `dir` (a new file per
/// publish), optionally with a TLS listener in front of it.
pub(crate) struct Nginx {
    pub(crate) proc: Proc,
    pub(crate) port: u16,
    pub(crate) dir: PathBuf,
}

impl Nginx {
    pub(crate) fn start(
        scratch: &Scratch,
        name: &'static str,
        port: u16,
        tls: Option<(u16, &Path)>,
    ) -> Self {
        Self::start_in(scratch, None, name, port, tls)
    }

    /// [`Nginx::start`] inside a network namespace (listening on its 127.0.0.1).
    pub(crate) fn start_in(
        scratch: &Scratch,
        ns: Option<&Netns>,
        name: &'static str,
        port: u16,
        tls: Option<(u16, &Path)>,
    ) -> Self {
        let dir = scratch.file(name);
        let rec = dir.join("rec");
        std::fs::create_dir_all(&rec).unwrap();
        let (load_stream, stream_block) = match tls {
            Some((tls_port, pki)) => (
                format!("load_module {STREAM_MODULE};"),
                format!(
                    "stream {{ server {{ listen 127.0.0.1:{tls_port} ssl; \
                     ssl_certificate {0}/cert.pem; ssl_certificate_key {0}/key.pem; \
                     proxy_pass 127.0.0.1:{port}; }} }}",
                    pki.display()
                ),
            ),
            None => (String::new(), String::new()),
        };
        let modules = format!("load_module {RTMP_MODULE};\n{load_stream}");
        let blocks = format!(
            "rtmp {{ server {{ listen 127.0.0.1:{port}; chunk_size 4096; application live {{ \
             live on; record all; record_unique on; record_path {r}; }} }} }}\n{stream_block}\n",
            r = rec.display(),
        );
        let proc = run(&dir, ns, name, &modules, &blocks);
        Self { proc, port, dir }
    }

    /// nginx inside `ns` as an HTTP reverse proxy on `listen`: `/<prefix>/...` goes to
    /// `http://<upstream>/...` for each route. Nothing is rewritten: the upstreams' `Location`s
    /// must name this origin already (bridges with `--node-url http://<listen>/<prefix>`).
    pub(crate) fn proxy_in(
        scratch: &Scratch,
        ns: &Netns,
        name: &'static str,
        listen: SocketAddr,
        routes: &[(&str, SocketAddr)],
    ) -> Self {
        let dir = scratch.file(name);
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = format!("listen {listen};\n");
        for (prefix, upstream) in routes {
            server += &format!("location /{prefix}/ {{ proxy_pass http://{upstream}/; }}\n");
        }
        let blocks = format!(
            "http {{ access_log {d}/access.log; client_body_temp_path {d}/body; \
             proxy_temp_path {d}/proxy;\nserver {{\n{server}}} }}\n",
            d = dir.display(),
        );
        let proc = run(&dir, Some(ns), name, "", &blocks);
        Self {
            proc,
            port: listen.port(),
            dir,
        }
    }

    /// Recordings, oldest first.
    pub(crate) fn recordings(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.join("rec"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "flv"))
            .collect();
        files.sort();
        files
    }
}

/// nginx loading `modules` (`load_module` lines, which must come first) and serving `blocks`,
/// with the settings every instance here shares, its files in `dir`; back once it listens.
fn run(dir: &Path, ns: Option<&Netns>, name: &'static str, modules: &str, blocks: &str) -> Proc {
    let conf = format!(
        "{modules}\nuser root;\ndaemon off;\nworker_processes 1;\nerror_log {d}/error.log info;\n\
         pid {d}/nginx.pid;\nevents {{ worker_connections 64; }}\n{blocks}",
        d = dir.display(),
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let mut cmd = match ns {
        Some(ns) => ns.command(NGINX),
        None => Command::new(NGINX),
    };
    let proc = Proc::spawn(
        name,
        cmd.arg("-c").arg(dir.join("nginx.conf")).arg("-p").arg(dir),
        dir.join("stdout.log"),
    );
    // nginx writes its pid file once its listeners are open (seen from any namespace).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dir.join("nginx.pid").exists() {
        assert!(
            Instant::now() < deadline,
            "nginx did not start\n{}",
            proc.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    proc
}

/// Waits until `count` recordings exist and have stopped growing (the bridge unpublished).
pub(crate) fn wait_recordings(nginx: &Nginx, count: usize) -> Vec<PathBuf> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let size = |files: &[PathBuf]| -> u64 {
        files
            .iter()
            .map(|f| f.metadata().map_or(0, |m| m.len()))
            .sum()
    };
    loop {
        let files = nginx.recordings();
        let before = size(&files);
        std::thread::sleep(Duration::from_millis(600));
        if files.len() >= count && size(&files) == before && before > 0 {
            return files;
        }
        assert!(
            Instant::now() < deadline,
            "recordings: {files:?}\n{}",
            nginx.proc.log_tail(20)
        );
    }
}

/// What ffprobe says of a recording.
#[derive(Debug)]
pub(crate) struct Probe {
    pub(crate) codecs: Vec<String>,
    pub(crate) duration: f64,
    /// First packet time per stream kind.
    pub(crate) first_video: f64,
    pub(crate) first_audio: f64,
    pub(crate) monotonic: bool,
}

pub(crate) fn probe(file: &Path) -> Probe {
    let out = Command::new("/usr/bin/ffprobe")
        .args([
            "-v",
            "error",
            "-show_streams",
            "-show_packets",
            "-show_format",
            "-of",
            "json",
        ])
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffprobe {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let codecs = json["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["codec_name"].as_str().unwrap_or("?").to_owned())
        .collect();
    let duration = json["format"]["duration"]
        .as_str()
        .unwrap_or("0")
        .parse()
        .unwrap();
    let mut last = [f64::MIN, f64::MIN];
    let mut first = [f64::NAN, f64::NAN];
    let mut monotonic = true;
    for p in json["packets"].as_array().unwrap() {
        let kind = usize::from(p["codec_type"] == "audio");
        let dts: f64 = p["dts_time"].as_str().unwrap_or("0").parse().unwrap();
        if first[kind].is_nan() {
            first[kind] = dts;
        }
        monotonic &= dts >= last[kind];
        last[kind] = dts;
    }
    Probe {
        codecs,
        duration,
        first_video: first[0],
        first_audio: first[1],
        monotonic,
    }
}

/// `ffmpeg -v error -i FILE -enc_time_base -1 -f null -` must print nothing: every frame decodes,
/// with strictly increasing timestamps. `-enc_time_base -1` keeps FLV's milliseconds: by default
/// the null output counts in frames of the rate ffmpeg guesses (30 fps), and a camera's uneven
/// frame times (Chromium's: 18 ms between two of them) put two frames in one such slot, which it
/// reports as "non monotonically increasing dts" of a recording whose timestamps all increase
/// (as `peers::playlist_decode_errors` found for HLS).
pub(crate) fn decode_errors(file: &Path) -> String {
    let out = Command::new("/usr/bin/ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(file)
        .args(["-enc_time_base", "-1", "-f", "null", "-"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// H.264 + AAC, about `secs` long, monotonic, audio and video starting together, no errors.
pub(crate) fn check_recording(file: &Path, secs: f64, tolerance: f64) {
    let p = probe(file);
    eprintln!("{}: {p:?}", file.display());
    assert_eq!(p.codecs, ["h264", "aac"], "{}", file.display());
    assert!(
        (p.duration - secs).abs() <= secs * tolerance,
        "duration {} vs {secs} s sent ({})",
        p.duration,
        file.display()
    );
    assert!(p.monotonic, "timestamps go backwards in {}", file.display());
    assert!(
        (p.first_audio - p.first_video).abs() <= 0.1,
        "audio starts at {} s, video at {} s",
        p.first_audio,
        p.first_video
    );
    let errors = decode_errors(file);
    assert!(
        errors.trim().is_empty(),
        "decode errors in {}:\n{errors}",
        file.display()
    );
}
