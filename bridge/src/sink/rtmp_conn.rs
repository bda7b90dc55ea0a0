//! One RTMP/RTMPS publishing connection: TCP (or TLS), handshake, connect, publish, then FLV tag
//! bodies out. rml_rtmp does the protocol (sans-IO); this module only moves its bytes.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::messages::RtmpMessage;
use rml_rtmp::rml_amf0::Amf0Value;
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult,
    PublishRequestType, StreamMetadata,
};
use rml_rtmp::time::RtmpTimestamp;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, pki_types::ServerName};

use crate::rtmp_url::RtmpUrl;

/// A connection failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RtmpError {
    /// TCP or TLS failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The handshake failed.
    #[error("RTMP handshake: {0:?}")]
    Handshake(rml_rtmp::handshake::HandshakeError),
    /// The RTMP session failed.
    #[error("RTMP session: {0:?}")]
    Session(rml_rtmp::sessions::ClientSessionError),
    /// The server refused the connect or publish.
    #[error("RTMP server refused: {0}")]
    Refused(String),
    /// The server closed the connection.
    #[error("RTMP server closed the connection")]
    Closed,
    /// A step took too long.
    #[error("RTMP {0} timed out")]
    Timeout(&'static str),
    /// The TLS server name is not valid.
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
}

impl From<rml_rtmp::sessions::ClientSessionError> for RtmpError {
    fn from(e: rml_rtmp::sessions::ClientSessionError) -> Self {
        Self::Session(e)
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// How long [`RtmpConnection::close`] may take: a target that stopped reading must not hold up
/// the end of a session (or the bridge's shutdown).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The chunk stream [`fc_unpublish`] goes on: one rml_rtmp's serializer never uses (it puts
/// messages on 2 to 6 by type), so that the header it compresses the next message against on
/// its own streams is still the one the server holds.
const FC_UNPUBLISH_CHUNK_STREAM: u8 = 7;

/// A live publishing connection.
pub struct RtmpConnection {
    session: ClientSession,
    /// The stream key published, which `FCUnpublish` names.
    key: String,
    /// The chunk size rml_rtmp announced (its configuration's), which a message must fit to go
    /// out as one chunk.
    chunk_size: usize,
    writer: WriteHalf<Box<dyn Stream>>,
    from_server: mpsc::Receiver<Vec<u8>>,
    reader: JoinHandle<()>,
}

impl std::fmt::Debug for RtmpConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtmpConnection").finish_non_exhaustive()
    }
}

/// The default TLS client configuration: Mozilla's roots (webpki-roots) plus `extra_roots`
/// (a private CA, or a self-signed ingest's certificate).
pub fn tls_config(
    extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in extra_roots {
        roots.add(cert)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

async fn read_task(mut reader: ReadHalf<Box<dyn Stream>>, tx: mpsc::Sender<Vec<u8>>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx.send(buf[..n].to_vec()).await.is_err() {
                    return;
                }
            }
        }
    }
}

impl RtmpConnection {
    /// Connects, handshakes, and publishes `url.key` live; returns once the server accepted.
    pub async fn publish(
        url: &RtmpUrl,
        tls: &Arc<rustls::ClientConfig>,
        timeout: Duration,
    ) -> Result<Self, RtmpError> {
        tokio::time::timeout(timeout, Self::publish_inner(url, tls))
            .await
            .map_err(|_| RtmpError::Timeout("connect/publish"))?
    }

    async fn publish_inner(
        url: &RtmpUrl,
        tls: &Arc<rustls::ClientConfig>,
    ) -> Result<Self, RtmpError> {
        let tcp = TcpStream::connect((url.host.as_str(), url.port)).await?;
        tcp.set_nodelay(true)?;
        let mut stream: Box<dyn Stream> = if url.tls {
            let name = ServerName::try_from(url.host.clone())
                .map_err(|_| RtmpError::ServerName(url.host.clone()))?;
            Box::new(TlsConnector::from(tls.clone()).connect(name, tcp).await?)
        } else {
            Box::new(tcp)
        };

        let mut handshake = Handshake::new(PeerType::Client);
        let p0p1 = handshake
            .generate_outbound_p0_and_p1()
            .map_err(RtmpError::Handshake)?;
        stream.write_all(&p0p1).await?;
        let mut buf = vec![0u8; 16 * 1024];
        let leftover = loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Err(RtmpError::Closed);
            }
            match handshake
                .process_bytes(&buf[..n])
                .map_err(RtmpError::Handshake)?
            {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    stream.write_all(&response_bytes).await?;
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    stream.write_all(&response_bytes).await?;
                    break remaining_bytes;
                }
            }
        };

        let mut config = ClientSessionConfig::new();
        config.tc_url = Some(url.tc_url());
        // A u32 always fits a usize on the targets the bridge builds for (32 and 64 bits).
        let chunk_size = usize::try_from(config.chunk_size).unwrap_or(usize::MAX);
        let (session, initial) = ClientSession::new(config)?;
        let (read_half, writer) = tokio::io::split(stream);
        let (tx, from_server) = mpsc::channel(64);
        let reader = tokio::spawn(read_task(read_half, tx));
        let mut conn = Self {
            session,
            key: url.key.clone(),
            chunk_size,
            writer,
            from_server,
            reader,
        };
        conn.apply(initial).await?;
        if !leftover.is_empty() {
            let results = conn.session.handle_input(&leftover)?;
            conn.apply(results).await?;
        }
        let request = conn.session.request_connection(url.app.clone())?;
        conn.apply(vec![request]).await?;
        conn.wait_for(|e| matches!(e, ClientSessionEvent::ConnectionRequestAccepted))
            .await?;
        let request = conn
            .session
            .request_publishing(url.key.clone(), PublishRequestType::Live)?;
        conn.apply(vec![request]).await?;
        conn.wait_for(|e| matches!(e, ClientSessionEvent::PublishRequestAccepted))
            .await?;
        Ok(conn)
    }

    /// Writes outbound packets in order; returns the raised events.
    async fn apply(
        &mut self,
        results: Vec<ClientSessionResult>,
    ) -> Result<Vec<ClientSessionEvent>, RtmpError> {
        let mut events = Vec::new();
        for result in results {
            match result {
                ClientSessionResult::OutboundResponse(packet) => {
                    self.writer.write_all(&packet.bytes).await?;
                }
                ClientSessionResult::RaisedEvent(event) => events.push(event),
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        Ok(events)
    }

    async fn wait_for(
        &mut self,
        wanted: impl Fn(&ClientSessionEvent) -> bool,
    ) -> Result<(), RtmpError> {
        loop {
            for event in self.server_input().await? {
                match event {
                    ClientSessionEvent::ConnectionRequestRejected { description } => {
                        return Err(RtmpError::Refused(description));
                    }
                    e if wanted(&e) => return Ok(()),
                    _ => {}
                }
            }
        }
    }

    /// Waits for bytes from the server and handles them (acks, pings, errors).
    async fn server_input(&mut self) -> Result<Vec<ClientSessionEvent>, RtmpError> {
        let bytes = self.recv_server().await.ok_or(RtmpError::Closed)?;
        self.handle_server(&bytes).await
    }

    /// The next bytes from the server; `None` once it has closed. Cancel-safe (a channel
    /// receive), so an output task can select on it next to its unit queue.
    pub async fn recv_server(&mut self) -> Option<Vec<u8>> {
        self.from_server.recv().await
    }

    /// Handles bytes from [`Self::recv_server`]: answers acks and pings.
    pub async fn handle_server(
        &mut self,
        bytes: &[u8],
    ) -> Result<Vec<ClientSessionEvent>, RtmpError> {
        let results = self.session.handle_input(bytes)?;
        self.apply(results).await
    }

    /// Sends `@setDataFrame onMetaData`.
    pub async fn metadata(&mut self, metadata: &StreamMetadata) -> Result<(), RtmpError> {
        let packet = self.session.publish_metadata(metadata)?;
        self.apply(vec![packet]).await.map(drop)
    }

    /// Sends one video tag body.
    pub async fn video(&mut self, ms: u32, body: Bytes) -> Result<(), RtmpError> {
        let packet = self
            .session
            .publish_video_data(body, RtmpTimestamp::new(ms), false)?;
        self.apply(vec![packet]).await.map(drop)
    }

    /// Sends one audio tag body.
    pub async fn audio(&mut self, ms: u32, body: Bytes) -> Result<(), RtmpError> {
        let packet = self
            .session
            .publish_audio_data(body, RtmpTimestamp::new(ms), false)?;
        self.apply(vec![packet]).await.map(drop)
    }

    /// FCUnpublish, deleteStream, then closes the connection, within `CLOSE_TIMEOUT` (2 s). The
    /// ingest then ends the stream at once (nginx-rtmp finalizes its recording, platforms mark
    /// the broadcast over) rather than when it notices the connection gone.
    pub async fn close(mut self) {
        let reader = self.reader.abort_handle();
        let unpublish = async move {
            if let Some(chunk) = fc_unpublish(&self.key, self.chunk_size) {
                let _ = self.writer.write_all(&chunk).await;
            }
            if let Ok(results) = self.session.stop_publishing() {
                let _ = self.apply(results).await;
            }
            let _ = self.writer.flush().await;
            let _ = self.writer.shutdown().await;
        };
        if tokio::time::timeout(CLOSE_TIMEOUT, unpublish)
            .await
            .is_err()
        {
            tracing::debug!("RTMP target did not take the unpublish in time");
        }
        reader.abort();
    }
}

/// `FCUnpublish(key)` as one type-0 chunk on [`FC_UNPUBLISH_CHUNK_STREAM`], message stream 0, as
/// OBS and librtmp send it before `deleteStream`. rml_rtmp's client sends only `deleteStream`;
/// ingests that track the Flash Media Server calls (Wowza, some platforms) wait for this one.
/// `None` if it cannot be encoded or would not fit one chunk (a stream key of kilobytes).
fn fc_unpublish(key: &str, chunk_size: usize) -> Option<Vec<u8>> {
    let payload = RtmpMessage::Amf0Command {
        command_name: "FCUnpublish".to_owned(),
        transaction_id: 0.0,
        command_object: Amf0Value::Null,
        additional_arguments: vec![Amf0Value::Utf8String(key.to_owned())],
    }
    .into_message_payload(RtmpTimestamp::new(0), 0)
    .ok()?;
    let len = payload.data.len();
    if len > chunk_size {
        return None;
    }
    let len = u32::try_from(len).ok()?.to_be_bytes();
    // RTMP 5.3.1: basic header (format 0, chunk stream id), then timestamp (3 bytes, 0), message
    // length (3 bytes), message type, message stream id (4 bytes, little endian).
    let mut chunk = vec![FC_UNPUBLISH_CHUNK_STREAM, 0, 0, 0];
    chunk.extend_from_slice(&len[1..]);
    chunk.push(payload.type_id);
    chunk.extend_from_slice(&0u32.to_le_bytes());
    chunk.extend_from_slice(&payload.data);
    Some(chunk)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rml_rtmp::sessions::{
        ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
    };
    use tokio::net::TcpListener;

    /// An RTMP server (rml_rtmp's, sans-IO) that accepts every request and returns the commands
    /// it saw after the publish was accepted, in order, once the client has closed.
    async fn server(listener: TcpListener) -> Vec<String> {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut handshake = Handshake::new(PeerType::Server);
        let mut buf = vec![0u8; 16 * 1024];
        let mut input = loop {
            let n = socket.read(&mut buf).await.unwrap();
            match handshake.process_bytes(&buf[..n]).unwrap() {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    socket.write_all(&response_bytes).await.unwrap();
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    socket.write_all(&response_bytes).await.unwrap();
                    break remaining_bytes;
                }
            }
        };
        let (mut session, mut results) = ServerSession::new(ServerSessionConfig::new()).unwrap();
        let (mut seen, mut publishing) = (Vec::new(), false);
        loop {
            results.extend(session.handle_input(&input).unwrap());
            while !results.is_empty() {
                for result in std::mem::take(&mut results) {
                    match result {
                        ServerSessionResult::OutboundResponse(p) => {
                            socket.write_all(&p.bytes).await.unwrap();
                        }
                        ServerSessionResult::RaisedEvent(event) => match event {
                            ServerSessionEvent::ConnectionRequested { request_id, .. } => {
                                results.extend(session.accept_request(request_id).unwrap());
                            }
                            ServerSessionEvent::PublishStreamRequested { request_id, .. } => {
                                publishing = true;
                                results.extend(session.accept_request(request_id).unwrap());
                            }
                            ServerSessionEvent::UnhandleableAmf0Command {
                                command_name,
                                additional_values,
                                ..
                            } if publishing => {
                                seen.push(format!("{command_name} {additional_values:?}"));
                            }
                            ServerSessionEvent::PublishStreamFinished { stream_key, .. } => {
                                seen.push(format!("finished {stream_key}"));
                            }
                            _ => {}
                        },
                        ServerSessionResult::UnhandleableMessageReceived(_) => {}
                    }
                }
            }
            let n = socket.read(&mut buf).await.unwrap();
            if n == 0 {
                return seen;
            }
            input = buf[..n].to_vec();
        }
    }

    /// What an ingest sees of a close: FCUnpublish naming the key, then deleteStream (which
    /// rml_rtmp's server reports as the publish finished), both readable by a server that
    /// tracks the client's chunk headers.
    #[tokio::test]
    async fn close_unpublishes_with_fc_unpublish_then_delete_stream() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(server(listener));
        let url = RtmpUrl::parse(&format!("rtmp://127.0.0.1:{port}/live/cam-key")).unwrap();
        let tls = tls_config(Vec::new()).unwrap();
        let mut conn = RtmpConnection::publish(&url, &tls, Duration::from_secs(5))
            .await
            .unwrap();
        conn.video(0, Bytes::from_static(&[0x17, 0, 0, 0, 0]))
            .await
            .unwrap();
        conn.close().await;
        let seen = tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            seen,
            [
                "FCUnpublish [Utf8String(\"cam-key\")]".to_owned(),
                "finished cam-key".to_owned()
            ]
        );
    }
}
