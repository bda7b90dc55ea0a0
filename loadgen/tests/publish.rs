//! `publish`: the RTMP ingest against rml_rtmp's client, and end to end through the bridge
//! binary when it is built (the bridge cannot run in-process: it depends on loadgen).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use loadgen::media::FrameStamp;
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

async fn next(ingest: &mut RtmpIngest) -> IngestEvent {
    tokio::time::timeout(Duration::from_secs(5), ingest.recv())
        .await
        .expect("ingest event")
        .expect("ingest running")
}

#[tokio::test]
async fn ingest_finds_stamps_in_published_tags() {
    let mut ingest = RtmpIngest::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut client = Client::connect(ingest.local_addr(), "live", "cam7").await;
    // A sequence header (not searched), then three frames, the last two out of order.
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the bridge when the test ends, however it ends.
struct Bridge(Child);

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn through_the_bridge_binary() {
    let binary = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/bridge");
    if !binary.exists() {
        eprintln!("SKIPPED: bridge binary not built ({})", binary.display());
        return;
    }
    let (http, udp, rtmp) = (free_port(), free_port(), free_port());
    let _bridge = Bridge(
        Command::new(&binary)
            .args(["--http", &format!("127.0.0.1:{http}")])
            .args(["--udp", &format!("127.0.0.1:{udp}")])
            .args([
                "--rtmp",
                &format!("rtmp://127.0.0.1:{rtmp}/live/{{stream}}"),
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
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
    let args = PublishArgs {
        url: format!("http://127.0.0.1:{http}/whip/e2e{{i}}"),
        token: None,
        publishers: 2,
        duration: Duration::from_secs(5),
        rtmp_listen: Some(SocketAddr::from(([127, 0, 0, 1], rtmp))),
        bind_ip: "127.0.0.1".parse().unwrap(),
    };
    let report = publish::run(&args).await.unwrap();
    print!("{}", report.table());
    assert_eq!(report.sessions.ok, 2, "{:?}", report.failure_examples);
    let frames = report.frames.unwrap();
    assert!(frames.received > 0, "{frames:?}");
    assert_eq!(frames.lost, 0, "{frames:?}");
    let latency = &report.latency["frame_rtmp"];
    assert_eq!(latency.raw.count, frames.received + frames.duplicated);
    assert!(latency.raw.p50_ms < 500.0, "p50 {} ms", latency.raw.p50_ms);
    assert_eq!(report.latency["first_rtmp"].raw.count, 2);
}
