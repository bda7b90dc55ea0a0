//! `publish`: the RTMP ingest against rml_rtmp's client, the LL-HLS client against a scripted
//! server and a part captured from the bridge, and end to end (RTMP and LL-HLS) through the
//! bridge binary when it is built (found beside this test's own executable, so it follows
//! `CARGO_TARGET_DIR` and `--release`; `cargo test --workspace` builds it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use loadgen::media::FrameStamp;
use loadgen::publish::fmp4::{Fragment, Init};
use loadgen::publish::hls::{HlsClient, HlsEvent};
use loadgen::publish::ingest::{IngestEvent, RtmpIngest};
use loadgen::publish::{self, PublishArgs};
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// A minimal RTMP publisher: writes the results, returns the events.
struct Client {
    tcp: TcpStream,
    session: ClientSession,
}

impl Client {
    async fn connect(addr: SocketAddr, app: &str, key: &str) -> Client {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let mut handshake = Handshake::new(PeerType::Client);
        tcp.write_all(&handshake.generate_outbound_p0_and_p1().unwrap())
            .await
            .unwrap();
        let mut buf = vec![0u8; 16 * 1024];
        let leftover = loop {
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed during the handshake");
            match handshake.process_bytes(&buf[..n]).unwrap() {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    tcp.write_all(&response_bytes).await.unwrap();
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    tcp.write_all(&response_bytes).await.unwrap();
                    break remaining_bytes;
                }
            }
        };
        let (session, initial) = ClientSession::new(ClientSessionConfig::new()).unwrap();
        let mut c = Client { tcp, session };
        c.apply(initial).await;
        let results = c.session.handle_input(&leftover).unwrap();
        c.apply(results).await;
        let r = c.session.request_connection(app.to_owned()).unwrap();
        c.apply(vec![r]).await;
        c.wait_for(|e| matches!(e, ClientSessionEvent::ConnectionRequestAccepted))
            .await;
        let r = c
            .session
            .request_publishing(key.to_owned(), PublishRequestType::Live)
            .unwrap();
        c.apply(vec![r]).await;
        c.wait_for(|e| matches!(e, ClientSessionEvent::PublishRequestAccepted))
            .await;
        c
    }

    async fn apply(&mut self, results: Vec<ClientSessionResult>) -> Vec<ClientSessionEvent> {
        let mut events = Vec::new();
        for r in results {
            match r {
                ClientSessionResult::OutboundResponse(p) => {
                    self.tcp.write_all(&p.bytes).await.unwrap();
                }
                ClientSessionResult::RaisedEvent(e) => events.push(e),
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        events
    }

    async fn wait_for(&mut self, wanted: impl Fn(&ClientSessionEvent) -> bool) {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = tokio::time::timeout(Duration::from_secs(5), self.tcp.read(&mut buf))
                .await
                .expect("RTMP server answer")
                .unwrap();
            assert!(n > 0, "server closed");
            let results = self.session.handle_input(&buf[..n]).unwrap();
            if self.apply(results).await.iter().any(&wanted) {
                return;
            }
        }
    }

    async fn audio(&mut self, body: Vec<u8>, ms: u32) {
        let r = self
            .session
            .publish_audio_data(Bytes::from(body), RtmpTimestamp::new(ms), false)
            .unwrap();
        self.apply(vec![r]).await;
    }

    async fn video(&mut self, body: Vec<u8>, ms: u32) {
        let r = self
            .session
            .publish_video_data(Bytes::from(body), RtmpTimestamp::new(ms), false)
            .unwrap();
        self.apply(vec![r]).await;
    }
}

/// An AVC NALU video tag body with these NAL units.
fn avc_tag(keyframe: bool, nals: &[&[u8]]) -> Vec<u8> {
    let mut body = vec![if keyframe { 0x17 } else { 0x27 }, 1, 0, 0, 0];
    for nal in nals {
        body.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        body.extend_from_slice(nal);
    }
    body
}

/// The next event that is not a media timestamp.
async fn next(ingest: &mut RtmpIngest) -> IngestEvent {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(5), ingest.recv())
            .await
            .expect("ingest event")
            .expect("ingest running");
        if !matches!(event, IngestEvent::Media { .. }) {
            return event;
        }
    }
}

#[tokio::test]
async fn ingest_finds_stamps_in_published_tags() {
    let mut ingest = RtmpIngest::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut client = Client::connect(ingest.local_addr(), "live", "cam7").await;
    // A sequence header (not searched for stamps; its record is cut before any SPS), then three
    // frames, the last two out of order.
    client
        .video(vec![0x17, 0, 0, 0, 0, 1, 0x42, 0xe0, 0x1f, 0xff], 0)
        .await;
    let stamps: Vec<FrameStamp> = [0, 2, 1]
        .map(|frame| FrameStamp {
            sent_us: 1_000 + frame,
            frame,
        })
        .to_vec();
    for (i, s) in stamps.iter().enumerate() {
        let sei = s.to_sei();
        client
            .video(avc_tag(i == 0, &[&sei, &[0x41, 0x9a, 0x11]]), i as u32 * 33)
            .await;
    }
    let first = next(&mut ingest).await;
    assert!(
        matches!(&first, IngestEvent::Publishing { stream, first_byte_us } if stream == "cam7" && *first_byte_us > 0),
        "{first:?}"
    );
    let config = next(&mut ingest).await;
    assert_eq!(
        config,
        IngestEvent::VideoConfig {
            stream: "cam7".into(),
            size: None
        }
    );
    let mut got = Vec::new();
    for _ in 0..3 {
        match next(&mut ingest).await {
            IngestEvent::Frame {
                stream,
                stamp,
                received_us,
            } => {
                assert_eq!(stream, "cam7");
                assert!(received_us > stamp.sent_us);
                got.push(stamp);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got, stamps);
}

#[tokio::test]
async fn ingest_reports_media_timestamps_but_not_sequence_headers() {
    use loadgen::publish::account::Track;
    let mut ingest = RtmpIngest::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut client = Client::connect(ingest.local_addr(), "live", "cam8").await;
    // AAC sequence header, AVC sequence header, then an AAC frame and a video frame.
    client.audio(vec![0xAF, 0, 0x11, 0x90], 0).await;
    client
        .video(vec![0x17, 0, 0, 0, 0, 1, 0x42, 0xe0, 0x1f, 0xff], 0)
        .await;
    client.audio(vec![0xAF, 1, 0x21, 0x00], 21).await;
    client.video(avc_tag(true, &[&[0x65, 0x88]]), 33).await;
    let mut media = Vec::new();
    while media.len() < 2 {
        let event = tokio::time::timeout(Duration::from_secs(5), ingest.recv())
            .await
            .expect("ingest event")
            .unwrap();
        if let IngestEvent::Media {
            stream,
            track,
            timestamp_ms,
        } = event
        {
            assert_eq!(stream, "cam8");
            media.push((track, timestamp_ms));
        }
    }
    assert_eq!(media, [(Track::Audio, 21), (Track::Video, 33)]);
}

/// The init section and one part captured from the bridge (see tests/data/hls/README.md).
fn captured() -> (Bytes, Bytes) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/hls");
    let read = |name: &str| Bytes::from(std::fs::read(dir.join(name)).unwrap());
    (read("init.mp4"), read("part.m4s"))
}

#[test]
fn reads_a_part_captured_from_the_bridge() {
    let (init, part) = captured();
    let init = Init::parse(&init).unwrap();
    let video = init.require_video().unwrap();
    assert_eq!(video.track.track_id, 1);
    assert_eq!(video.track.timescale, 90_000);
    assert_eq!(video.nal_length_size, 4);
    // The synthetic pictures loadgen sent at the time (see tests/data/hls/README.md).
    assert_eq!(video.size, Some((640, 480)), "from the avcC's SPS");
    assert_eq!(
        init.audio.map(|a| (a.track_id, a.timescale)),
        Some((2, 48_000))
    );
    let f = Fragment::parse(&init, &part).unwrap();
    // Six frames of a 200 ms part at 30 fps, one stamp each, consecutive, sent 33 ms apart.
    assert_eq!(f.video_samples, 6);
    // Not an independent part: it starts with neither a sync sample nor an IDR.
    let first = f.first_video_sample.unwrap();
    assert!(!first.sync && !first.idr, "{first:?}");
    assert!(f.audio_samples > 0);
    let frames: Vec<u64> = f.stamps.iter().map(|s| s.frame).collect();
    assert_eq!(frames, (36..42).collect::<Vec<_>>());
    for pair in f.stamps.windows(2) {
        let gap = pair[1].sent_us - pair[0].sent_us;
        assert!((25_000..45_000).contains(&gap), "{gap} µs between frames");
    }
    let (video, audio) = (f.video.unwrap(), f.audio.unwrap());
    assert_eq!(video.end - video.start, 6 * 3000);
    // Both tracks end within two AAC frames (21.3 ms each) of each other.
    assert!(
        (video.end_us() - audio.end_us()).abs() < 50_000,
        "{video:?} {audio:?}"
    );
}

/// A scripted LL-HLS server: the playlist 404s twice (the stream has not started), then lists
/// part 0 and hints part 1, which it publishes `PART1_AFTER` after the first playlist; a
/// blocking reload for part 1 waits for it and gets the finished playlist.
#[derive(Clone)]
struct MockHls {
    log: Arc<Mutex<Vec<String>>>,
    first_playlist: Arc<Mutex<Option<Instant>>>,
    init: Bytes,
    part: Bytes,
}

const PART1_AFTER: Duration = Duration::from_millis(300);

const LL_HEAD: &str = "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:1\n\
    #EXT-X-MEDIA-SEQUENCE:10\n#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.6\n\
    #EXT-X-PART-INF:PART-TARGET=0.2\n#EXT-X-MAP:URI=\"init.mp4\"\n\
    #EXT-X-PART:DURATION=0.2,URI=\"part0.m4s\",INDEPENDENT=YES\n";

impl MockHls {
    async fn part1_published(&self) {
        let first = self
            .first_playlist
            .lock()
            .unwrap()
            .unwrap_or_else(Instant::now);
        tokio::time::sleep_until((first + PART1_AFTER).into()).await;
    }

    async fn handle(self, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let target = req
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default();
        let n = {
            let mut log = self.log.lock().unwrap();
            log.push(target.clone());
            log.iter()
                .filter(|t| t.starts_with("/ll/index.m3u8"))
                .count()
        };
        let ok = |body: Bytes| Response::new(Full::new(body));
        let not_found = || {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = hyper::StatusCode::NOT_FOUND;
            r
        };
        match target.as_str() {
            "/ll/index.m3u8" if n <= 2 => not_found(),
            "/ll/index.m3u8" => {
                self.first_playlist
                    .lock()
                    .unwrap()
                    .get_or_insert_with(Instant::now);
                ok(format!("{LL_HEAD}#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part1.m4s\"\n").into())
            }
            "/ll/index.m3u8?_HLS_msn=10&_HLS_part=1" => {
                self.part1_published().await;
                ok(format!(
                    "{LL_HEAD}#EXT-X-PART:DURATION=0.2,URI=\"part1.m4s\"\n#EXTINF:0.4,\n\
                     seg10.m4s\n#EXT-X-ENDLIST\n"
                )
                .into())
            }
            "/ll/part1.m4s" => {
                self.part1_published().await;
                ok(self.part.clone())
            }
            "/plain/index.m3u8" => ok(
                "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:3\n\
                #EXT-X-MAP:URI=\"../ll/init.mp4\"\n#EXTINF:0.2,\nseg3.m4s\n#EXT-X-ENDLIST\n"
                    .into(),
            ),
            "/ll/init.mp4" => ok(self.init.clone()),
            "/ll/part0.m4s" | "/plain/seg3.m4s" => ok(self.part.clone()),
            _ => not_found(),
        }
    }

    async fn start() -> (MockHls, SocketAddr) {
        let (init, part) = captured();
        let mock = MockHls {
            log: Arc::default(),
            first_playlist: Arc::default(),
            init,
            part,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = mock.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let server = server.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let server = server.clone();
                        async move { Ok::<_, Infallible>(server.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (mock, addr)
    }
}

/// Runs the client on `path` to its end; returns its events.
async fn follow(addr: SocketAddr, path: &str) -> Vec<HlsEvent> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let url = format!("http://{addr}{path}");
    tokio::time::timeout(
        Duration::from_secs(10),
        HlsClient::new().follow(url, "s".into(), 0, tx),
    )
    .await
    .expect("the client ends at EXT-X-ENDLIST")
    .unwrap();
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    events
}

#[tokio::test]
async fn hls_client_blocks_on_the_next_part_and_fetches_each_part_once() {
    let (mock, addr) = MockHls::start().await;
    let events = follow(addr, "/ll/index.m3u8").await;
    let parts: Vec<(&str, u64, &[FrameStamp])> = events
        .iter()
        .filter_map(|e| match e {
            HlsEvent::Part {
                url,
                received_us,
                stamps,
                video_end_us,
                audio_end_us,
                ..
            } => {
                assert!(video_end_us.is_some() && audio_end_us.is_some());
                Some((url.rsplit('/').next().unwrap(), *received_us, &stamps[..]))
            }
            HlsEvent::Error { error, .. } => panic!("{error}"),
            HlsEvent::Ended { .. } => None,
            HlsEvent::Ladder { .. } => panic!("no ladder followed"),
        })
        .collect();
    assert_eq!(parts.len(), 2, "{events:?}");
    assert_eq!((parts[0].0, parts[1].0), ("part0.m4s", "part1.m4s"));
    assert_eq!(parts[0].2.len(), 6);
    assert!(
        matches!(events.last(), Some(HlsEvent::Ended { stream, rendition: None }) if stream == "s")
    );
    let log = mock.log.lock().unwrap().clone();
    let count = |t: &str| log.iter().filter(|l| *l == t).count();
    // Polled through the 404s, then one blocking reload; every file once; the segment the
    // parts make up never.
    assert_eq!(count("/ll/index.m3u8"), 3, "{log:?}");
    assert_eq!(
        count("/ll/index.m3u8?_HLS_msn=10&_HLS_part=1"),
        1,
        "{log:?}"
    );
    for file in ["/ll/init.mp4", "/ll/part0.m4s", "/ll/part1.m4s"] {
        assert_eq!(count(file), 1, "{file}: {log:?}");
    }
    assert_eq!(count("/ll/seg10.m4s"), 0, "{log:?}");
    // Part 1 was requested (the preload hint) before the server had it, and timed when it came.
    let hinted = log.iter().position(|l| l == "/ll/part1.m4s").unwrap();
    let reload = log.iter().position(|l| l.contains("_HLS_part=1")).unwrap();
    assert!(hinted.abs_diff(reload) <= 1, "{log:?}");
    let published_us = {
        let first = mock.first_playlist.lock().unwrap().unwrap();
        let wall = std::time::SystemTime::now() - first.elapsed() + PART1_AFTER;
        wall.duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64
    };
    assert!(
        parts[1].1 + 20_000 >= published_us,
        "part 1 received {} µs before it existed",
        published_us - parts[1].1
    );
}

#[tokio::test]
async fn hls_client_reads_plain_hls_by_whole_segments() {
    let (mock, addr) = MockHls::start().await;
    let events = follow(addr, "/plain/index.m3u8").await;
    assert!(
        matches!(
            &events[..],
            [HlsEvent::Part { url, stamps, .. }, HlsEvent::Ended { .. }]
                if url.ends_with("/plain/seg3.m4s") && stamps.len() == 6
        ),
        "{events:?}"
    );
    let log = mock.log.lock().unwrap().clone();
    assert_eq!(
        log,
        ["/plain/index.m3u8", "/ll/init.mp4", "/plain/seg3.m4s"]
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the bridge when the test ends, however it ends, and removes its HLS folder.
struct Bridge(Child, PathBuf);

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

/// The `bridge` binary of the build this test belongs to: `<target>/<profile>/bridge`, this test
/// being `<target>/<profile>/deps/publish-<hash>`. (Cargo names another package's binary to no
/// test, and the bridge is another package.)
fn bridge_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test runs from <target>/<profile>/deps");
    profile_dir.join(format!("bridge{}", std::env::consts::EXE_SUFFIX))
}

/// The bridge binary started on free ports, pushing RTMP to `rtmp` and serving HLS; `None`
/// (the test skips) when it is not built. Returns it with its HTTP and RTMP ports.
async fn start_bridge(name: &str) -> Option<(Bridge, u16, u16)> {
    let binary = bridge_binary();
    if !binary.exists() {
        assert!(
            std::env::var_os("BRIDGE_REQUIRE_INTEROP").is_none_or(|v| v != "1"),
            "BRIDGE_REQUIRE_INTEROP=1 but the bridge binary is not built ({}): cargo build -p bridge",
            binary.display()
        );
        eprintln!("SKIPPED: bridge binary not built ({})", binary.display());
        return None;
    }
    let (http, udp, rtmp) = (free_port(), free_port(), free_port());
    let hls_dir =
        std::env::temp_dir().join(format!("loadgen-{name}-{}-{http}", std::process::id()));
    let bridge = Bridge(
        Command::new(&binary)
            .args(["--http", &format!("127.0.0.1:{http}")])
            .args(["--udp", &format!("127.0.0.1:{udp}")])
            .args([
                "--rtmp",
                &format!("rtmp://127.0.0.1:{rtmp}/live/{{stream}}"),
            ])
            .args(["--hls", "on"])
            .arg("--hls-dir")
            .arg(&hls_dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
        hls_dir.clone(),
    );
    let mut up = false;
    for _ in 0..100 {
        if TcpStream::connect(("127.0.0.1", http)).await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "the bridge did not listen on {http}");
    Some((bridge, http, rtmp))
}

/// Two publishers through the bridge, measured at both outputs: the RTMP push to the built-in
/// ingest and the LL-HLS playlists the bridge serves.
#[tokio::test]
async fn through_the_bridge_binary() {
    let Some((_bridge, http, rtmp)) = start_bridge("publish").await else {
        return;
    };
    let args = PublishArgs {
        rtmp_listen: Some(SocketAddr::from(([127, 0, 0, 1], rtmp))),
        hls: Some(format!("http://127.0.0.1:{http}/hls/{{stream}}/index.m3u8")),
        ..PublishArgs::new(
            format!("http://127.0.0.1:{http}/whip/e2e{{i}}"),
            2,
            Duration::from_secs(5),
        )
    };
    let report = tokio::time::timeout(Duration::from_secs(60), publish::run(&args))
        .await
        .expect("publish ends")
        .unwrap();
    print!("{}", report.table());
    assert_eq!(report.sessions.ok, 2, "{:?}", report.failure_examples);
    for (name, frame, first) in [
        ("rtmp", "frame_rtmp", "first_rtmp"),
        ("hls", "frame_hls", "first_hls"),
    ] {
        let output = &report.outputs[name];
        let frames = output.frames;
        assert!(frames.received > 100, "{name}: {frames:?}");
        assert_eq!(frames.lost, 0, "{name}: {frames:?}");
        assert_eq!(output.errors, 0, "{name}: {:?}", report.failure_examples);
        let latency = &report.latency[frame];
        assert_eq!(
            latency.raw.count,
            frames.received + frames.duplicated,
            "{name}"
        );
        // A frame waits for its part to end (200 ms) in LL-HLS; RTMP has no such wait.
        let bound = if name == "hls" { 1000.0 } else { 500.0 };
        assert!(
            latency.raw.p50_ms < bound,
            "{frame} p50 {} ms",
            latency.raw.p50_ms
        );
        assert_eq!(report.latency[first].raw.count, 2, "{first}");
        let drift = output.av_drift_ms.as_ref().expect("audio and video seen");
        assert_eq!(drift.streams.len(), 2, "{name}: {drift:?}");
        assert!(drift.worst.abs() < 100.0, "{name}: a/v drift {drift:?}");
    }
    // The gates read the same values.
    let gate = loadgen::report::Gate {
        slos: [
            "frames.lost==0",
            "hls.frames.lost==0",
            "av_drift<100ms",
            "frame_hls.count>0",
        ]
        .map(|s| s.parse().unwrap())
        .to_vec(),
        ..Default::default()
    };
    assert_eq!(gate.check(&report), Vec::<String>::new());
}

/// Three simulcast layers the OBS way through the bridge: the RTMP push carries the top layer
/// (its AVC sequence header says 640x360) and loses no frame; the HLS ladder lists a rendition
/// per layer, each at its layer's size, losing no frame, every segment starting with a key
/// frame at the top rendition's boundaries, and the audio rendition reads.
#[tokio::test]
async fn simulcast_through_the_bridge_binary() {
    let Some((_bridge, http, rtmp)) = start_bridge("simulcast").await else {
        return;
    };
    let args = PublishArgs {
        rtmp_listen: Some(SocketAddr::from(([127, 0, 0, 1], rtmp))),
        hls: Some(format!("http://127.0.0.1:{http}/hls/{{stream}}/index.m3u8")),
        simulcast: 3,
        ..PublishArgs::new(
            format!("http://127.0.0.1:{http}/whip/sim{{i}}"),
            1,
            Duration::from_secs(4),
        )
    };
    let report = tokio::time::timeout(Duration::from_secs(60), publish::run(&args))
        .await
        .expect("publish ends")
        .unwrap();
    assert_eq!(report.sessions.ok, 1, "{:?}", report.failure_examples);
    let rtmp = &report.outputs["rtmp"];
    assert!(rtmp.frames.received > 100, "{:?}", rtmp.frames);
    assert_eq!(rtmp.frames.lost, 0, "{:?}", rtmp.frames);
    assert_eq!(rtmp.errors, 0, "{:?}", report.failure_examples);
    assert_eq!(rtmp.video_sizes, [("640x360".to_owned(), 1)].into());
    print!("{}", report.table());
    let hls = &report.outputs["hls"];
    assert_eq!(hls.errors, 0, "{:?}", report.failure_examples);
    let sizes: Vec<_> = hls
        .renditions
        .iter()
        .map(|r| (r.uri.as_str(), r.width, r.height))
        .collect();
    assert_eq!(
        sizes,
        [
            ("v0/index.m3u8", Some(640), Some(360)),
            ("v1/index.m3u8", Some(426), Some(240)),
            ("v2/index.m3u8", Some(212), Some(120)),
        ]
    );
    for r in &hls.renditions {
        assert!(r.frames.received > 60, "{r:?}");
        assert_eq!(r.frames.lost, 0, "{r:?}");
        assert!(r.segments >= 2, "{r:?}");
        assert_eq!(r.keyframe_starts, r.segments, "{r:?}");
        // The bridge cuts every layer at its first IDR at or after one grid tick.
        assert!(r.max_misalignment_ms.is_some_and(|m| m < 50.0), "{r:?}");
        assert!(r.latency.as_ref().is_some_and(|l| l.count > 0), "{r:?}");
    }
    let audio = hls.audio_rendition.as_ref().expect("an audio rendition");
    assert_eq!(audio.uri, "audio/index.m3u8");
    assert!(audio.audio_frames > 0 && audio.errors == 0, "{audio:?}");
    let gate = loadgen::report::Gate {
        slos: [
            "hls.renditions.count==3",
            "hls.renditions.lost==0",
            "hls.renditions.non_keyframe_starts==0",
            "hls.renditions.misalignment<50ms",
        ]
        .map(|s| s.parse().unwrap())
        .to_vec(),
        ..Default::default()
    };
    assert_eq!(gate.check(&report), Vec::<String>::new());
}

/// A ramp of one publisher a step through the bridge, with a limit the second step breaks: the
/// ramp stops there, and the knee is the first step.
#[tokio::test]
async fn ramp_through_the_bridge_binary() {
    let Some((_bridge, http, rtmp)) = start_bridge("ramp").await else {
        return;
    };
    let args = PublishArgs {
        rtmp_listen: Some(SocketAddr::from(([127, 0, 0, 1], rtmp))),
        ramp: Some(1),
        ramp_hold: Duration::from_millis(1500),
        ..PublishArgs::new(
            format!("http://127.0.0.1:{http}/whip/ramp{{i}}"),
            3,
            Duration::from_secs(60),
        )
    };
    let limits: Vec<loadgen::report::Slo> = ["frames.lost==0", "sessions.planned<2"]
        .map(|s| s.parse().unwrap())
        .to_vec();
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        publish::run_with_limits(&args, &limits),
    )
    .await
    .expect("publish ends")
    .unwrap();
    print!("{}", report.table());
    let ramp = report.ramp.as_ref().expect("a ramp report");
    assert_eq!(ramp.steps.len(), 2, "{ramp:?}");
    assert_eq!(ramp.knee, Some(1));
    let (first, second) = (&ramp.steps[0], &ramp.steps[1]);
    assert!(first.ok, "{first:?}");
    assert_eq!(first.frames_lost_rtmp, Some(0));
    assert_eq!(first.frames_lost_hls, None);
    assert!(
        first.frame_rtmp_p99_ms.is_some_and(|p| p > 0.0),
        "{first:?}"
    );
    assert!(first.cpu_ms_per_s_per_publisher.is_some(), "{first:?}");
    assert!(first.us_per_packet.is_some(), "{first:?}");
    assert_eq!(second.publishers, 2);
    assert!(!second.ok);
    assert!(
        second.broken[0].contains("sessions.planned<2"),
        "{second:?}"
    );
    // The third publisher never started; the two that did sent until the ramp ended.
    assert_eq!(report.sessions.planned, 2);
    assert_eq!(report.sessions.ok, 2, "{:?}", report.failure_examples);
    assert_eq!(report.outputs["rtmp"].frames.lost, 0);
    assert!(report.server.as_ref().is_some_and(|s| s.publishers == 1));
}
