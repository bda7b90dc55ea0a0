//! Runs one sans-I/O [`RTCPeerConnection`] on one UDP socket in a tokio task.
//!
//! The connection sits behind a mutex shared by the task and the [`PeerDriver`] handle. Whoever
//! changes it (signalling calls, `write_rtp`) does so through [`PeerDriver::with_pc`], which
//! wakes the task afterwards so queued output is flushed at once. The task loop is the one from
//! the rtc README: drain `poll_write` to the socket, drain `poll_event` / `poll_read`, then wait
//! for a datagram, the `poll_timeout` deadline or a wake-up.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::state::{RTCIceConnectionState, RTCPeerConnectionState};
use rtc::rtp;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::Error;

/// Receive buffer size: larger than any datagram a WebRTC peer sends.
const RECV_BUFFER: usize = 4096;
/// How long [`PeerDriver::close`] waits for the task to flush and stop.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Wait used when the connection has no deadline.
const IDLE_WAIT: Duration = Duration::from_secs(3600);

/// Connection and ICE state as last reported by the connection's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnState {
    /// `RTCPeerConnection.connectionState`.
    pub peer: RTCPeerConnectionState,
    /// `RTCPeerConnection.iceConnectionState`.
    pub ice: RTCIceConnectionState,
}

impl ConnState {
    /// Media can flow: peer connection connected and ICE connected or completed.
    pub fn is_connected(&self) -> bool {
        self.peer == RTCPeerConnectionState::Connected
            && matches!(
                self.ice,
                RTCIceConnectionState::Connected | RTCIceConnectionState::Completed
            )
    }

    /// The connection is beyond repair (failed or closed).
    pub fn is_dead(&self) -> bool {
        matches!(
            self.peer,
            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
        ) || matches!(
            self.ice,
            RTCIceConnectionState::Failed | RTCIceConnectionState::Closed
        )
    }
}

/// What came in from the peer, counted by the driver.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RxStats {
    /// RTP packets delivered by the connection (after SRTP).
    pub rtp_packets: u64,
    /// RTP payload bytes.
    pub rtp_payload_bytes: u64,
    /// RTP packets per payload type.
    pub rtp_by_payload_type: BTreeMap<u8, u64>,
    /// RTCP compound packets the connection delivered to the application. rtc's interceptors
    /// consume sender and receiver reports, so this stays 0 for them: see `rtcp_datagrams`.
    pub rtcp_packets: u64,
    /// Datagrams on the socket that are (S)RTCP, by RFC 5761 demultiplexing.
    pub rtcp_datagrams: u64,
    /// UDP datagrams received on the socket.
    pub datagrams: u64,
}

struct Inner {
    pc: RTCPeerConnection,
    rx: RxStats,
    rtp_sink: Option<mpsc::UnboundedSender<rtp::Packet>>,
}

struct Shared {
    inner: Mutex<Inner>,
    wake: Notify,
    state: watch::Sender<ConnState>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies all pending events to the state channel. Called with the lock held, so events
    /// are applied in the order the connection produced them.
    fn drain_events(&self, inner: &mut Inner) {
        while let Some(event) = inner.pc.poll_event() {
            match event {
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(peer) => {
                    tracing::debug!(%peer, "peer connection state");
                    self.state.send_modify(|s| s.peer = peer);
                }
                RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(ice) => {
                    tracing::debug!(%ice, "ICE connection state");
                    self.state.send_modify(|s| s.ice = ice);
                }
                _ => {}
            }
        }
    }

    fn drain_reads(inner: &mut Inner) {
        while let Some(TaggedRTCMessage { message, .. }) = inner.pc.poll_read() {
            match message {
                RTCMessage::RtpPacket(_track, packet) => {
                    inner.rx.rtp_packets += 1;
                    inner.rx.rtp_payload_bytes += packet.payload.len() as u64;
                    *inner
                        .rx
                        .rtp_by_payload_type
                        .entry(packet.header.payload_type)
                        .or_default() += 1;
                    if let Some(sink) = &inner.rtp_sink
                        && sink.send(packet).is_err()
                    {
                        inner.rtp_sink = None;
                    }
                }
                RTCMessage::RtcpPacket(..) => inner.rx.rtcp_packets += 1,
                _ => {}
            }
        }
    }
}

/// Handle on a peer connection driven by a background task.
///
/// Dropping the handle stops the task (it closes the connection and flushes what that queues).
pub struct PeerDriver {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    state_rx: watch::Receiver<ConnState>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for PeerDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerDriver")
            .field("local_addr", &self.local_addr)
            .field("state", &*self.state_rx.borrow())
            .finish_non_exhaustive()
    }
}

impl PeerDriver {
    /// Starts driving `pc` on `socket`. Must be called inside a tokio runtime.
    ///
    /// `rtp_sink`, if given, receives every inbound RTP packet (for test servers).
    pub fn spawn(
        pc: RTCPeerConnection,
        socket: UdpSocket,
        rtp_sink: Option<mpsc::UnboundedSender<rtp::Packet>>,
    ) -> Result<PeerDriver, Error> {
        let local_addr = socket.local_addr()?;
        let (state, state_rx) = watch::channel(ConnState {
            peer: RTCPeerConnectionState::New,
            ice: RTCIceConnectionState::New,
        });
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                pc,
                rx: RxStats::default(),
                rtp_sink,
            }),
            wake: Notify::new(),
            state,
        });
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let task = tokio::spawn(run(shared.clone(), socket, local_addr, shutdown_rx));
        Ok(PeerDriver {
            shared,
            local_addr,
            state_rx,
            shutdown: Some(shutdown_tx),
            task: Some(task),
        })
    }

    /// Stops the task at once without closing the connection: the peer vanishes the way a
    /// crashed client or a dead network does (no DTLS close_notify, no more consent checks).
    pub async fn vanish(mut self) {
        // The task must be gone before the shutdown sender drops: a dropped sender is the
        // graceful-close signal, and a worker thread could still be polling the task.
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        self.shutdown = None;
    }

    /// The socket's local address (what the host candidate advertises).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Runs `f` on the connection, then applies the events it produced and wakes the task so
    /// that any output it queued is sent now. `f` runs under a mutex: keep it short, no I/O.
    pub fn with_pc<R>(&self, f: impl FnOnce(&mut RTCPeerConnection) -> R) -> R {
        let result = {
            let mut inner = self.shared.lock();
            let result = f(&mut inner.pc);
            self.shared.drain_events(&mut inner);
            result
        };
        self.shared.wake.notify_one();
        result
    }

    /// The latest connection state.
    pub fn state(&self) -> ConnState {
        *self.state_rx.borrow()
    }

    /// What was received so far.
    pub fn rx_stats(&self) -> RxStats {
        self.shared.lock().rx.clone()
    }

    /// Whether the task is still running.
    pub fn is_running(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Waits until [`ConnState::is_connected`]; fails early if the connection dies or the task
    /// stops.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), Error> {
        let mut rx = self.state_rx.clone();
        let wait = rx.wait_for(|s| s.is_connected() || s.is_dead());
        let state = match tokio::time::timeout(timeout, wait).await {
            Err(_) => {
                return Err(Error::Timeout {
                    after: timeout,
                    what: "the peer connection to connect",
                });
            }
            Ok(Err(_)) => return Err(Error::DriverGone),
            Ok(Ok(state)) => *state,
        };
        if state.is_connected() {
            Ok(())
        } else {
            Err(Error::ConnectionLost(format!(
                "{} (ICE {})",
                state.peer, state.ice
            )))
        }
    }

    /// Closes the connection, flushes what that queues (DTLS close_notify) and stops the task.
    pub async fn close(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take()
            && tokio::time::timeout(CLOSE_TIMEOUT, task).await.is_err()
        {
            tracing::warn!("peer driver did not stop in time");
        }
    }
}

impl Drop for PeerDriver {
    fn drop(&mut self) {
        // Dropping `shutdown` ends the task gracefully; nothing else to do.
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

async fn run(
    shared: Arc<Shared>,
    socket: UdpSocket,
    local_addr: SocketAddr,
    mut shutdown: oneshot::Receiver<()>,
) {
    let mut buf = vec![0u8; RECV_BUFFER];
    loop {
        let (out, deadline) = {
            let mut inner = shared.lock();
            let mut out = Vec::new();
            while let Some(msg) = inner.pc.poll_write() {
                out.push(msg);
            }
            shared.drain_events(&mut inner);
            Shared::drain_reads(&mut inner);
            (out, inner.pc.poll_timeout())
        };
        flush(&socket, out).await;

        let deadline = deadline.unwrap_or_else(|| Instant::now() + IDLE_WAIT);
        tokio::select! {
            _ = &mut shutdown => break,
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                let mut inner = shared.lock();
                if let Err(err) = inner.pc.handle_timeout(Instant::now()) {
                    tracing::debug!(%err, "handle_timeout");
                }
            }
            received = socket.recv_from(&mut buf) => match received {
                Ok((n, peer_addr)) => {
                    let mut inner = shared.lock();
                    inner.rx.datagrams += 1;
                    if is_rtcp(&buf[..n]) {
                        inner.rx.rtcp_datagrams += 1;
                    }
                    let msg = TaggedBytesMut {
                        now: Instant::now(),
                        transport: TransportContext {
                            local_addr,
                            peer_addr,
                            ecn: None,
                            transport_protocol: TransportProtocol::UDP,
                        },
                        message: BytesMut::from(&buf[..n]),
                    };
                    if let Err(err) = inner.pc.handle_read(msg) {
                        tracing::debug!(%err, %peer_addr, "handle_read");
                    }
                }
                Err(err) => {
                    // ICMP errors surface here on some platforms; they are not fatal, but do
                    // not spin if the socket keeps failing.
                    tracing::debug!(%err, "recv_from");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            },
            () = shared.wake.notified() => {}
        }
    }

    // Shutdown: close and flush what closing queued.
    let out = {
        let mut inner = shared.lock();
        if let Err(err) = inner.pc.close() {
            tracing::debug!(%err, "close");
        }
        let mut out = Vec::new();
        while let Some(msg) = inner.pc.poll_write() {
            out.push(msg);
        }
        shared.drain_events(&mut inner);
        out
    };
    flush(&socket, out).await;
}

/// RFC 7983 / RFC 5761: RTP version 2 and a payload type byte of 192..=223 means RTCP.
fn is_rtcp(datagram: &[u8]) -> bool {
    datagram.len() >= 8 && datagram[0] >> 6 == 2 && (192..=223).contains(&datagram[1])
}

async fn flush(socket: &UdpSocket, out: Vec<TaggedBytesMut>) {
    for msg in out {
        if let Err(err) = socket.send_to(&msg.message, msg.transport.peer_addr).await {
            tracing::debug!(%err, peer = %msg.transport.peer_addr, "send_to");
        }
    }
}
