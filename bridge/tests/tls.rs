//! HTTPS in process, on loopback: the bridge started with a certificate of a test CA answers over
//! HTTP/1.1 and HTTP/2 (ALPN) and takes a WHIP offer; a certificate swapped on disk is served to
//! the next connection without a restart, and one that does not load leaves the old one serving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

use common::inproc::start_in_process;
use common::metrics::Metrics;
use common::proc::Scratch;
use common::tls::{TestCa, write_leaf};

const OFFER: &str = include_str!("data/ffmpeg9-whip-offer.sdp");

/// What one request over a new TLS connection got.
struct Answer {
    version: Version,
    status: StatusCode,
    body: String,
    /// The leaf certificate the server presented.
    served: CertificateDer<'static>,
}

/// `method path` with `body` over a new connection to `addr`, HTTP/2 if `config` offers `h2`
/// by ALPN (and the server takes it), else HTTP/1.1.
async fn request(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    method: Method,
    path: &str,
    body: &str,
) -> Answer {
    let exchange = async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let tls = TlsConnector::from(config).connect(name, tcp).await.unwrap();
        let (_, session) = tls.get_ref();
        let served = session.peer_certificates().unwrap()[0].clone();
        let h2 = session.alpn_protocol() == Some(b"h2");
        let request = Request::builder()
            .method(method)
            .uri(format!("https://localhost:{}{path}", addr.port()))
            .header("content-type", "application/sdp");
        let request = if h2 {
            request
        } else {
            request.header("host", format!("localhost:{}", addr.port()))
        };
        let request = request
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        let io = TokioIo::new(tls);
        let response = if h2 {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .unwrap();
            tokio::spawn(conn);
            sender.send_request(request).await.unwrap()
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            sender.send_request(request).await.unwrap()
        };
        let (version, status) = (response.version(), response.status());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Answer {
            version,
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
            served,
        }
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("an HTTPS exchange within 10 s")
}

#[tokio::test]
async fn https_serves_http1_and_http2_and_reloads_its_certificate() {
    let scratch = Scratch::new();
    let (cert, key) = (scratch.file("cert.pem"), scratch.file("key.pem"));
    let ca = TestCa::new();
    let first = ca.leaf("bridge", 1);
    write_leaf(&first, &cert, &key);
    let bridge = start_in_process(|c| {
        c.tls_cert = Some(cert.clone());
        c.tls_key = Some(key.clone());
    })
    .await;
    let addr = bridge.http_addr();
    let http1 = ca.client_config(&[b"http/1.1"]);
    let both = ca.client_config(&[b"h2", b"http/1.1"]);

    // A client that connects and says nothing holds no one up, and one that speaks plain HTTP
    // to the TLS port gets nothing but a closed connection.
    let _silent = TcpStream::connect(addr).await.unwrap();
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut reply))
        .await
        .expect("the plain-HTTP connection closed");
    assert!(!String::from_utf8_lossy(&reply).contains("200"));

    let answer = request(addr, http1.clone(), Method::GET, "/healthz", "").await;
    assert_eq!(
        (answer.version, answer.status),
        (Version::HTTP_11, StatusCode::OK)
    );
    assert_eq!(answer.served, first.der);
    let answer = request(addr, both.clone(), Method::GET, "/healthz", "").await;
    assert_eq!(
        (answer.version, answer.status),
        (Version::HTTP_2, StatusCode::OK)
    );
    // WHIP over HTTP/2: the offer is answered.
    let answer = request(addr, both.clone(), Method::POST, "/whip/tls", OFFER).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    assert!(answer.body.starts_with("v=0"), "{}", answer.body);

    // A renewal: new files, served to the next connection within a few polls.
    let renewed = ca.leaf("bridge renewed", 2);
    write_leaf(&renewed, &cert, &key);
    let served = wait_served(addr, &http1, &renewed.der).await;
    assert_eq!(served, renewed.der, "the renewed certificate is not served");
    let reloads =
        |result| Metrics::of(&bridge).sum("bridge_tls_reloads_total", &[("result", result)]);
    assert_eq!(reloads("ok"), 1.0);

    // A broken certificate on disk: logged and counted, and the renewed one still served.
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while reloads("error") < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failed reload counted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = request(addr, both, Method::GET, "/healthz", "").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.served, renewed.der);
    bridge.shutdown().await;
}

/// The certificate new connections get, once it is `want` (or after 10 s, whatever it is).
async fn wait_served(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    want: &CertificateDer<'static>,
) -> CertificateDer<'static> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let served = request(addr, config.clone(), Method::GET, "/healthz", "")
            .await
            .served;
        if &served == want || tokio::time::Instant::now() > deadline {
            return served;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
