//! The bridge's own HLS output, over real HTTP: the loadgen publisher in-process for the playlist
//! and LL-HLS rules (parts, blocking reload, preload hints, takeover, the end), and a real
//! publisher (FFmpeg 9's WHIP muxer) with Debian's ffprobe/ffmpeg reading the result from the
//! bridge as a player would, fMP4 and MPEG-TS. Missing tools: `SKIPPED`, unless
//! `BRIDGE_REQUIRE_INTEROP=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bridge::{Bridge, Config};
use common::inproc::endpoint;
use common::proc::Scratch;
use loadgen::Publisher;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONNECT: Duration = Duration::from_secs(10);

async fn start(tweak: impl FnOnce(&mut Config)) -> Bridge {
    common::inproc::start_in_process(tweak).await
}

/// An HTTP answer, as a tiny HTTP/1.1 client saw it.
#[derive(Debug)]
struct Got {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    elapsed: Duration,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET path` sent exactly as given (no normalisation of `..`, no decoding).
async fn get(addr: SocketAddr, path: &str) -> Got {
    let start = Instant::now();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut raw))
        .await
        .expect("answer within 20 s")
        .unwrap();
    let elapsed = start.elapsed();
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    assert!(
        !headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked")),
        "chunked answers are not expected"
    );
    Got {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
        elapsed,
    }
}

fn media_playlist(text: &str) -> m3u8_rs::MediaPlaylist {
    m3u8_rs::parse_media_playlist_res(text.as_bytes())
        .unwrap_or_else(|e| panic!("unparsable playlist ({e:?}):\n{text}"))
}

/// The `URI`s of the tags `#EXT-X-{tag}:` in `text`.
fn tag_uris(text: &str, tag: &str) -> Vec<String> {
    let prefix = format!("#EXT-X-{tag}:");
    text.lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .filter_map(|rest| rest.split("URI=\"").nth(1)?.split('"').next())
        .map(str::to_owned)
        .collect()
}

/// Where the preload-hinted part goes, as a blocking reload names it (`_HLS_msn`, `_HLS_part`):
/// the next part of the segment in progress. Its URI does not say: parts are numbered by one
/// running count, since the segment may end before it (and then `msn.index` means `msn+1.0`).
fn hinted_position(text: &str) -> (u64, u32) {
    let sequence: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .expect("EXT-X-MEDIA-SEQUENCE")
        .parse()
        .unwrap();
    let complete = text.matches("#EXTINF").count() as u64;
    let open = text.rsplit("#EXTINF").next().unwrap_or(text);
    let parts = open.matches("#EXT-X-PART:").count() as u32;
    (sequence + complete, parts)
}

fn part_target(text: &str) -> Duration {
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-PART-INF:PART-TARGET="))
        .expect("EXT-X-PART-INF");
    Duration::from_secs_f64(value.parse().unwrap())
}

fn box_type(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes.get(4..8).unwrap_or_default()).unwrap_or("?")
}

/// Waits until the playlist is one `want` accepts.
async fn wait_playlist(
    http: SocketAddr,
    stream: &str,
    what: &str,
    want: impl Fn(&m3u8_rs::MediaPlaylist) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = get(http, &format!("/hls/{stream}/index.m3u8")).await;
        if got.status == 200 && want(&media_playlist(&got.text())) {
            return got.text();
        }
        assert!(
            Instant::now() < deadline,
            "no playlist with {what}: {} {}",
            got.status,
            got.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the playlist lists `segments` complete segments.
async fn wait_segments(http: SocketAddr, stream: &str, segments: usize) -> String {
    wait_playlist(http, stream, &format!("{segments} segments"), |p| {
        p.segments.len() >= segments
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_publisher_is_served_as_low_latency_hls() {
    let dir = Scratch::new();
    let bridge = start(|c| c.hls_dir = dir.0.clone()).await;
    let http = bridge.http_addr();
    let publisher = Publisher::connect(endpoint(&bridge, "demo")).await.unwrap();
    publisher.wait_connected(CONNECT).await.unwrap();
    let sending = tokio::spawn(async move {
        let sent = publisher.send_media(Duration::from_secs(4)).await.unwrap();
        (publisher, sent)
    });

    // The playlist: LL-HLS, fMP4, with complete segments, parts and a preload hint.
    let text = wait_segments(http, "demo", 2).await;
    let got = get(http, "/hls/demo/index.m3u8").await;
    assert_eq!(got.status, 200);
    assert_eq!(
        got.header("content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    assert_eq!(got.header("cache-control"), Some("no-cache"));
    assert_eq!(got.header("access-control-allow-origin"), Some("*"));
    let playlist = media_playlist(&text);
    assert!(!playlist.end_list);
    assert!(
        text.contains("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES"),
        "{text}"
    );
    assert!(text.contains("#EXT-X-PROGRAM-DATE-TIME:"), "{text}");
    let map = playlist.segments[0]
        .map
        .as_ref()
        .expect("EXT-X-MAP")
        .uri
        .clone();
    let parts = tag_uris(&text, "PART");
    assert!(parts.len() >= 3, "{text}");
    assert_eq!(tag_uris(&text, "PRELOAD-HINT").len(), 1, "{text}");

    // Init section, a segment and a part, with the headers caches need.
    let init = get(http, &format!("/hls/demo/{map}")).await;
    assert_eq!(init.status, 200, "{map}");
    assert_eq!(box_type(&init.body), "ftyp");
    let segment_uri = &playlist.segments[0].uri;
    let segment = get(http, &format!("/hls/demo/{segment_uri}")).await;
    assert_eq!(segment.status, 200, "{segment_uri}");
    assert_eq!(segment.header("content-type"), Some("video/mp4"));
    assert_eq!(
        segment.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(box_type(&segment.body), "moof");
    let part_uri = parts.last().unwrap();
    let part = get(http, &format!("/hls/demo/{part_uri}")).await;
    assert_eq!(part.status, 200, "{part_uri}");
    assert_eq!(box_type(&part.body), "moof");
    assert_eq!(part.header("content-type"), Some("video/mp4"));

    // A blocking reload for the hinted part answers once it exists: within three parts.
    let got = get(http, "/hls/demo/index.m3u8").await;
    let hint = tag_uris(&got.text(), "PRELOAD-HINT").remove(0);
    let target = part_target(&got.text());
    let (msn, index) = hinted_position(&got.text());
    let got = get(
        http,
        &format!("/hls/demo/index.m3u8?_HLS_msn={msn}&_HLS_part={index}"),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert!(
        got.elapsed <= target * 3 + Duration::from_millis(200),
        "blocking reload took {:?} (part target {target:?})",
        got.elapsed
    );
    assert!(
        tag_uris(&got.text(), "PART").contains(&hint),
        "{hint} not in\n{}",
        got.text()
    );
    // With delta updates asked for, still a playlist with the part.
    let got = get(
        http,
        &format!("/hls/demo/index.m3u8?_HLS_msn={msn}&_HLS_part={index}&_HLS_skip=YES"),
    )
    .await;
    assert_eq!(got.status, 200);
    assert!(tag_uris(&got.text(), "PART").contains(&hint));

    // The part now hinted does not exist yet: its request waits for it.
    let got = get(http, "/hls/demo/index.m3u8").await;
    let hint = tag_uris(&got.text(), "PRELOAD-HINT").remove(0);
    let part = get(http, &format!("/hls/demo/{hint}")).await;
    assert_eq!(part.status, 200, "{hint}: {}", part.text());
    assert_eq!(box_type(&part.body), "moof");
    assert!(
        part.elapsed >= Duration::from_millis(20) && part.elapsed <= target * 3,
        "the hinted part came after {:?}",
        part.elapsed
    );

    // Directives the spec refuses, and requests that reach outside the stream's folder.
    let got = get(http, "/hls/demo/index.m3u8?_HLS_part=1").await;
    assert_eq!(got.status, 400);
    let got = get(http, "/hls/demo/index.m3u8?_HLS_msn=99999999999999999").await;
    assert_eq!(got.status, 400);
    std::fs::write(dir.0.join("secret.m4s"), b"x").unwrap();
    for path in [
        "/hls/..%2F..%2Fetc/passwd",
        "/hls/demo/../../x",
        "/hls/demo/..%2Fsecret.m4s",
        "/hls/demo/%2e%2e%2fsecret.m4s",
        "/hls/demo/..",
        "/hls/..%2Fdemo/index.m3u8",
        "/hls/.demo/index.m3u8",
        "/hls/demo/seg1.m4s%00",
        "/hls/demo/notes.txt",
        "/hls/demo/seg1.m4s",
        "/hls/nobody/index.m3u8",
    ] {
        let got = get(http, path).await;
        assert_eq!(got.status, 404, "{path}: {}", got.text());
    }

    // The multivariant playlist names the codecs and the picture size.
    let got = get(http, "/hls/demo/main.m3u8").await;
    assert_eq!(got.status, 200);
    let main = got.text();
    assert!(
        main.contains("avc1.") && main.contains("mp4a.40.2"),
        "{main}"
    );
    assert!(
        main.contains("RESOLUTION=") && main.contains("index.m3u8"),
        "{main}"
    );

    // The publisher leaves: the playlist ends, and the folder holds what it lists.
    let (publisher, sent) = sending.await.unwrap();
    assert!(sent.keyframes >= 3, "{sent:?}");
    assert_eq!(publisher.delete().await.unwrap(), 200);
    let got = get(http, "/hls/demo/index.m3u8").await;
    let text = got.text();
    let playlist = media_playlist(&text);
    assert!(playlist.end_list, "{text}");
    assert!(!text.contains("PRELOAD-HINT"), "{text}");
    let total: f32 = playlist.segments.iter().map(|s| s.duration).sum();
    assert!(total > 2.0, "{total} s listed\n{text}");
    let folder = dir.0.join("demo");
    assert_eq!(
        std::fs::read_to_string(folder.join("index.m3u8")).unwrap(),
        text,
        "the file on disk is what HTTP serves"
    );
    assert!(folder.join("main.m3u8").exists());
    for uri in playlist
        .segments
        .iter()
        .map(|s| s.uri.clone())
        .chain(tag_uris(&text, "PART"))
        .chain(tag_uris(&text, "MAP"))
        .chain(
            playlist
                .segments
                .iter()
                .filter_map(|s| s.map.clone())
                .map(|m| m.uri),
        )
    {
        assert!(folder.join(&uri).exists(), "{uri} missing on disk");
        // After the end, parts come from disk.
        assert_eq!(
            get(http, &format!("/hls/demo/{uri}")).await.status,
            200,
            "{uri}"
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    bridge.shutdown().await;
}

/// `EXT-X-PROGRAM-DATE-TIME` is the publisher's clock: each segment is dated when the publisher
/// sent its first frame (which the frame's loadgen stamp says), to within a few milliseconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_are_dated_when_the_publisher_sent_their_first_frame() {
    use loadgen::publish::fmp4::{Fragment, Init};
    let dir = Scratch::new();
    let bridge = start(|c| c.hls_dir = dir.0.clone()).await;
    let http = bridge.http_addr();
    let publisher = Publisher::connect(endpoint(&bridge, "dated"))
        .await
        .unwrap();
    publisher.wait_connected(CONNECT).await.unwrap();
    let sending = tokio::spawn(async move {
        publisher
            .send_media_stamped(Duration::from_secs(5))
            .await
            .unwrap();
        publisher
    });
    let text = wait_segments(http, "dated", 3).await;
    let playlist = media_playlist(&text);
    let map = &playlist.segments[0].map.as_ref().expect("EXT-X-MAP").uri;
    let init = Init::parse(&get(http, &format!("/hls/dated/{map}")).await.body).unwrap();
    let mut dated = 0;
    for segment in &playlist.segments {
        let Some(date) = segment.program_date_time else {
            continue;
        };
        let body = get(http, &format!("/hls/dated/{}", segment.uri)).await.body;
        let fragment = Fragment::parse(&init, &body).unwrap();
        let first = fragment.stamps.first().expect("stamped frames");
        let offset_us = date.timestamp_micros() - i64::try_from(first.sent_us).unwrap();
        // The date has millisecond resolution; the rest is the publisher's own pacing.
        assert!(
            offset_us.abs() <= 20_000,
            "{} dated {date}, its frame {} sent {} us off\n{text}",
            segment.uri,
            first.frame,
            offset_us
        );
        dated += 1;
    }
    assert!(dated >= 3, "{text}");
    let publisher = sending.await.unwrap();
    assert_eq!(publisher.delete().await.unwrap(), 200);
}

/// A simulcast publisher (three layers the OBS way) gets a ladder: `main.m3u8` lists a
/// video-only rendition per layer, highest first, with the audio rendition they share, and
/// every URI it lists answers; `index.m3u8` stays the top layer's, with audio.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulcast_publisher_gets_a_ladder() {
    let dir = Scratch::new();
    let bridge = start(|c| c.hls_dir = dir.0.clone()).await;
    let http = bridge.http_addr();
    let publisher = Publisher::connect(loadgen::PublisherConfig {
        simulcast: 3,
        ..endpoint(&bridge, "layers")
    })
    .await
    .unwrap();
    publisher.wait_connected(CONNECT).await.unwrap();
    let sending = tokio::spawn(async move {
        publisher.send_media(Duration::from_secs(4)).await.unwrap();
        publisher
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let ladder = loop {
        let got = get(http, "/hls/layers/main.m3u8").await;
        if got.status == 200
            && let Ok(m3u8_rs::Playlist::MasterPlaylist(p)) = m3u8_rs::parse_playlist_res(&got.body)
            && p.variants.len() == 3
            && !p.alternatives.is_empty()
        {
            break p;
        }
        assert!(Instant::now() < deadline, "no ladder: {}", got.text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let listed: Vec<_> = ladder
        .variants
        .iter()
        .map(|v| {
            let r = v.resolution.unwrap();
            (v.uri.as_str(), r.width, r.height, v.audio.as_deref())
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("v0/index.m3u8", 640, 360, Some("audio")),
            ("v1/index.m3u8", 426, 240, Some("audio")),
            ("v2/index.m3u8", 212, 120, Some("audio")),
        ]
    );
    assert!(
        ladder
            .variants
            .windows(2)
            .all(|w| w[0].bandwidth > w[1].bandwidth)
    );
    let audio = ladder.alternatives[0].uri.clone().unwrap();
    assert_eq!(audio, "audio/index.m3u8");
    for uri in ladder
        .variants
        .iter()
        .map(|v| v.uri.as_str())
        .chain([audio.as_str()])
    {
        let text = get(http, &format!("/hls/layers/{uri}")).await.text();
        let playlist = media_playlist(&text);
        let folder = uri.trim_end_matches("index.m3u8");
        let segment = &playlist.segments[0];
        let map = &segment.map.as_ref().expect("EXT-X-MAP").uri;
        for file in [map, &segment.uri] {
            let got = get(http, &format!("/hls/layers/{folder}{file}")).await;
            assert_eq!(got.status, 200, "{folder}{file}");
        }
        for part in tag_uris(&text, "PART") {
            let got = get(http, &format!("/hls/layers/{folder}{part}")).await;
            assert_eq!(got.status, 200, "{folder}{part}");
        }
    }
    // Only the renditions' own folder names lead anywhere.
    for bad in [
        "v3/index.m3u8",
        "v01/index.m3u8",
        "video/index.m3u8",
        "v0/main.txt",
    ] {
        assert_eq!(
            get(http, &format!("/hls/layers/{bad}")).await.status,
            404,
            "{bad}"
        );
    }
    let index = media_playlist(&get(http, "/hls/layers/index.m3u8").await.text());
    assert!(!index.segments.is_empty());

    let publisher = sending.await.unwrap();
    assert_eq!(publisher.delete().await.unwrap(), 200);
    for uri in ["v0/index.m3u8", "v2/index.m3u8", "audio/index.m3u8"] {
        let ended = wait_playlist(
            http,
            &format!("layers/{}", uri.trim_end_matches("/index.m3u8")),
            "ENDLIST",
            |p| p.end_list,
        )
        .await;
        assert!(ended.contains("#EXT-X-ENDLIST"), "{uri}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_continues_the_playlist_after_a_discontinuity() {
    let dir = Scratch::new();
    let bridge = start(|c| c.hls_dir = dir.0.clone()).await;
    let http = bridge.http_addr();
    let first = Publisher::connect(endpoint(&bridge, "cam")).await.unwrap();
    first.wait_connected(CONNECT).await.unwrap();
    first.send_media(Duration::from_millis(2200)).await.unwrap();
    let before = media_playlist(&wait_segments(http, "cam", 1).await);

    let second = Publisher::connect(endpoint(&bridge, "cam")).await.unwrap();
    second.wait_connected(CONNECT).await.unwrap();
    second
        .send_media(Duration::from_millis(2200))
        .await
        .unwrap();
    assert_eq!(first.delete().await.unwrap(), 404, "taken over");
    assert_eq!(second.delete().await.unwrap(), 200);

    let text = get(http, "/hls/cam/index.m3u8").await.text();
    let after = media_playlist(&text);
    assert!(after.end_list, "{text}");
    assert_eq!(
        after.media_sequence, before.media_sequence,
        "the same playlist, not a new one\n{text}"
    );
    let discontinuity = after
        .segments
        .iter()
        .position(|s| s.discontinuity)
        .unwrap_or_else(|| panic!("no EXT-X-DISCONTINUITY\n{text}"));
    assert!(discontinuity > 0, "{text}");
    let maps: Vec<_> = after
        .segments
        .iter()
        .filter_map(|s| s.map.as_ref().map(|m| m.uri.clone()))
        .collect();
    assert_eq!(
        maps.len(),
        2,
        "a new init section after the discontinuity\n{text}"
    );
    assert_ne!(maps[0], maps[1]);
    // Sequence numbers run on: segment names follow the media sequence.
    for (i, segment) in after.segments.iter().enumerate() {
        assert_eq!(
            segment.uri,
            format!("seg{}.m4s", after.media_sequence + i as u64),
            "{text}"
        );
    }

    // A publish after the end is a new presentation: numbered on, the old one's files gone.
    let next_msn = after.media_sequence + after.segments.len() as u64;
    let third = Publisher::connect(endpoint(&bridge, "cam")).await.unwrap();
    third.wait_connected(CONNECT).await.unwrap();
    third.send_media(Duration::from_millis(1500)).await.unwrap();
    let text = wait_playlist(http, "cam", "a new presentation", |p| {
        !p.end_list && !p.segments.is_empty()
    })
    .await;
    let fresh = media_playlist(&text);
    assert_eq!(fresh.media_sequence, next_msn, "{text}");
    assert!(!fresh.segments[0].discontinuity, "{text}");
    for segment in &after.segments {
        assert!(
            !dir.0.join("cam").join(&segment.uri).exists(),
            "{} left over",
            segment.uri
        );
    }
    assert_eq!(third.delete().await.unwrap(), 200);
    bridge.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// A real publisher, read back by ffprobe and ffmpeg.

fn ffmpeg_publishes_and_players_read_it_back(container: &str) {
    use common::binary::Bridge as BridgeProc;
    use common::proc::Proc;
    let _serial = common::proc::serial();
    for tool in ["/usr/bin/ffprobe", "/usr/bin/ffmpeg"] {
        if !Path::new(tool).exists() {
            return common::proc::skip(&format!("{tool} not found (apt-get install ffmpeg)"));
        }
    }
    let Some(ffmpeg) = common::peers::ffmpeg_whip() else {
        return common::proc::skip(
            "ffmpeg with the WHIP muxer not found (pip install imageio-ffmpeg)",
        );
    };
    const SECS: u32 = 12;
    let scratch = Scratch::new();
    let hls_dir = scratch.file("hls");
    let (http, udp) = common::binary::free_loopback_ports();
    let bridge = BridgeProc::start_with(
        &scratch,
        None,
        http,
        udp,
        None,
        &[
            "--hls-dir".into(),
            hls_dir.display().to_string(),
            "--hls-container".into(),
            container.into(),
            // Every segment stays listed, so the whole publish can be judged.
            "--hls-event".into(),
        ],
    );
    let mut publisher = Proc::spawn(
        "ffmpeg",
        &mut common::peers::ffmpeg_publish(&ffmpeg, &bridge.whip_url("cam"), SECS),
        scratch.file("ffmpeg.log"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while publisher.exited().is_none() {
        assert!(
            Instant::now() < deadline,
            "ffmpeg still running\n{}",
            publisher.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // ffmpeg's DELETE ends the session, and the playlist with it.
    let deadline = Instant::now() + Duration::from_secs(15);
    let text = loop {
        let (status, text) = bridge.get("/hls/cam/index.m3u8").unwrap_or_default();
        if status == 200 && text.contains("#EXT-X-ENDLIST") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no ended playlist: {status} {text}\n{}\n{}",
            publisher.log_tail(20),
            bridge.proc.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(text.contains("#EXT-X-PLAYLIST-TYPE:EVENT"), "{text}");
    let url = format!("http://{http}/hls/cam/index.m3u8");
    let (codecs, duration) = common::peers::probe_playlist(&url);
    assert_eq!(codecs, ["aac", "h264"], "{text}");
    assert!(
        (duration - f64::from(SECS)).abs() <= f64::from(SECS) * 0.05,
        "{duration} s of HLS for {SECS} s published\n{text}"
    );
    let errors = common::peers::playlist_decode_errors(&url);
    assert!(errors.trim().is_empty(), "decode errors:\n{errors}\n{text}");
    // The multivariant playlist is readable too.
    let (codecs, _) = common::peers::probe_playlist(&format!("http://{http}/hls/cam/main.m3u8"));
    assert_eq!(codecs, ["aac", "h264"]);
    assert!(hls_dir.join("cam").join("index.m3u8").exists());
}

#[test]
fn ffmpeg_whip_to_hls_fmp4_plays_back_in_ffmpeg() {
    ffmpeg_publishes_and_players_read_it_back("fmp4");
}

#[test]
fn ffmpeg_whip_to_hls_ts_plays_back_in_ffmpeg() {
    ffmpeg_publishes_and_players_read_it_back("ts");
}
