//! The one UDP socket every session shares, and the demultiplexer in front of it.
//!
//! A datagram from an address never seen is routed by the local ufrag in its STUN USERNAME
//! (`<our ufrag>:<their ufrag>`), which also teaches the route for that address; after that, by
//! address alone. This is how one port serves every session (str0m's and MediaMTX's shape).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use bytes::BytesMut;
use rtc::stun::attributes::ATTR_USERNAME;
use rtc::stun::message::Message;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::metrics::Metrics;

/// One received datagram for a session.
#[derive(Debug)]
pub struct Datagram {
    /// When it was read from the socket.
    pub now: Instant,
    /// Who sent it.
    pub from: SocketAddr,
    /// Its bytes (split from a shared receive buffer, not copied).
    pub data: BytesMut,
}

/// One peer's flow on its own connected socket (see [`UdpMux::connect_flow`]).
#[derive(Debug, Clone)]
pub struct FlowSocket {
    /// The connected socket (shared so a session can wait on it while it handles its state).
    pub socket: Arc<UdpSocket>,
    /// The peer it is connected to.
    pub peer: SocketAddr,
}

impl FlowSocket {
    /// Reads one datagram without waiting (`WouldBlock` when there is none). Only the peer's
    /// come back; another peer's, steered here before the socket was connected (see
    /// [`UdpMux::connect_flow`]), goes to its own session through `mux` (`Ok(None)`).
    pub fn try_recv(
        &self,
        buf: &mut BytesMut,
        now: Instant,
        mux: &UdpMux,
    ) -> std::io::Result<Option<Datagram>> {
        let (n, from) = self.socket.try_recv_buf_from(buf)?;
        let datagram = Datagram {
            now,
            from,
            data: buf.split_to(n),
        };
        if from == self.peer {
            return Ok(Some(datagram));
        }
        mux.dispatch(datagram);
        Ok(None)
    }

    /// Sends one datagram to the peer.
    pub async fn send(&self, data: &[u8]) {
        if let Err(err) = self.socket.send(data).await {
            tracing::debug!(to = %self.peer, %err, "udp send failed");
        }
    }
}

/// Session queue depth. Beyond it datagrams are dropped and counted: a stalled session must not
/// stall the socket for everyone.
const SESSION_QUEUE: usize = 1024;

#[derive(Debug, Default)]
struct Routes {
    by_ufrag: HashMap<String, u64>,
    by_addr: HashMap<SocketAddr, u64>,
    sessions: HashMap<u64, Route>,
}

#[derive(Debug)]
struct Route {
    tx: mpsc::Sender<Datagram>,
    ufrags: Vec<String>,
    addrs: Vec<SocketAddr>,
}

/// The shared socket and its routing table.
#[derive(Debug)]
pub struct UdpMux {
    socket: Arc<UdpSocket>,
    local_addr: SocketAddr,
    routes: Mutex<Routes>,
    metrics: Arc<Metrics>,
}

/// Extracts our ufrag from a STUN binding request's USERNAME, if the datagram is one.
pub fn stun_local_ufrag(data: &[u8]) -> Option<String> {
    // STUN: first two bits zero, magic cookie at 4..8 (RFC 5389 §6); cheap checks before parsing.
    if data.len() < 20 || data[0] & 0xc0 != 0 || data[4..8] != [0x21, 0x12, 0xa4, 0x42] {
        return None;
    }
    let mut msg = Message::new();
    msg.unmarshal_binary(data).ok()?;
    let username = msg.get(ATTR_USERNAME).ok()?;
    let username = std::str::from_utf8(&username).ok()?;
    Some(username.split(':').next()?.to_owned())
}

impl UdpMux {
    /// Binds the socket, with a receive buffer of (up to) `recv_buffer` bytes.
    pub async fn bind(
        addr: SocketAddr,
        recv_buffer: usize,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Arc<Self>> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        if let Err(err) = socket.set_recv_buffer_size(recv_buffer) {
            tracing::warn!(%err, recv_buffer, "UDP receive buffer not set");
        }
        // Linux reports twice what it grants (the other half is its bookkeeping).
        let granted = socket.recv_buffer_size().unwrap_or(0) / 2;
        if granted < recv_buffer {
            tracing::warn!(
                asked = recv_buffer,
                granted,
                "UDP receive buffer capped by the kernel: raise net.core.rmem_max (sysctl) or \
                 expect datagram loss in bursts with many publishers"
            );
        } else {
            tracing::info!(bytes = granted, "UDP receive buffer");
        }
        socket.set_nonblocking(true)?;
        // Each publisher's media flow later gets a connected socket on this same port (see
        // `connect_flow`), which needs SO_REUSEPORT on every socket of the port. Probing with a
        // plain socket first keeps "address in use" an error, as it would be without it: a
        // second bridge on the port must fail, not share its traffic.
        if addr.port() != 0 {
            std::net::UdpSocket::bind(addr)?;
        }
        socket.set_reuse_port(true)?;
        socket.bind(&addr.into())?;
        let socket = UdpSocket::from_std(socket.into())?;
        let local_addr = socket.local_addr()?;
        Ok(Arc::new(Self {
            socket: Arc::new(socket),
            local_addr,
            routes: Mutex::default(),
            metrics,
        }))
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Sends one datagram.
    pub async fn send(&self, to: SocketAddr, data: &[u8]) {
        if let Err(err) = self.socket.send_to(data, to).await {
            tracing::debug!(%to, %err, "udp send failed");
        }
    }

    /// A socket of its own for the flow from `peer`: bound to the shared port and connected to
    /// the peer, so the kernel delivers that peer's datagrams to it rather than to the shared
    /// socket (Linux and the BSDs prefer a connected socket to its reuse-port group). The
    /// session reads it directly, in batches: no demultiplexing, no route lock and no hand-over
    /// between tasks per datagram.
    ///
    /// Between its `bind` and its `connect` the socket is an unconnected member of the port's
    /// reuse-port group, and the kernel may steer any peer's datagram to it; those stay queued
    /// after the `connect`. Its reader must check each datagram's source and [`Self::dispatch`]
    /// the others (see `Session::read_flow`).
    pub fn connect_flow(&self, peer: SocketAddr) -> std::io::Result<FlowSocket> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(self.local_addr),
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        socket.set_nonblocking(true)?;
        socket.set_reuse_port(true)?;
        socket.bind(&self.local_addr.into())?;
        socket.connect(&peer.into())?;
        let socket = UdpSocket::from_std(socket.into())?;
        Ok(FlowSocket {
            socket: Arc::new(socket),
            peer,
        })
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        // The table stays consistent across a panic elsewhere (every update is one insert or
        // remove), so a poisoned lock is still usable.
        self.routes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a session and returns its datagram queue.
    pub fn register(&self, session: u64, ufrag: &str) -> mpsc::Receiver<Datagram> {
        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        let mut routes = self.routes();
        routes.by_ufrag.insert(ufrag.to_owned(), session);
        routes.sessions.insert(
            session,
            Route {
                tx,
                ufrags: vec![ufrag.to_owned()],
                addrs: Vec::new(),
            },
        );
        rx
    }

    /// Adds a local ufrag after an ICE restart (the old one keeps working until the session ends,
    /// so packets of the old ICE session still reach the peer, which ignores them).
    pub fn add_ufrag(&self, session: u64, ufrag: &str) {
        let mut routes = self.routes();
        if let Some(route) = routes.sessions.get_mut(&session) {
            route.ufrags.push(ufrag.to_owned());
            routes.by_ufrag.insert(ufrag.to_owned(), session);
        }
    }

    /// Forgets a session and every route to it.
    pub fn unregister(&self, session: u64) {
        let mut routes = self.routes();
        if let Some(route) = routes.sessions.remove(&session) {
            for ufrag in route.ufrags {
                routes.by_ufrag.remove(&ufrag);
            }
            for addr in route.addrs {
                if routes.by_addr.get(&addr) == Some(&session) {
                    routes.by_addr.remove(&addr);
                }
            }
        }
    }

    /// How many sessions are routed (for tests and shutdown).
    pub fn len(&self) -> usize {
        self.routes().sessions.len()
    }

    /// True when no session is routed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn route(&self, from: SocketAddr, data: &[u8]) -> Option<mpsc::Sender<Datagram>> {
        let mut routes = self.routes();
        if let Some(id) = routes.by_addr.get(&from).copied() {
            return routes.sessions.get(&id).map(|r| r.tx.clone());
        }
        let ufrag = stun_local_ufrag(data)?;
        let id = routes.by_ufrag.get(&ufrag).copied()?;
        routes.by_addr.insert(from, id);
        let route = routes.sessions.get_mut(&id)?;
        route.addrs.push(from);
        Some(route.tx.clone())
    }

    /// Reads the socket until it fails; runs as one task.
    pub async fn run(self: Arc<Self>) {
        const CHUNK: usize = 256 * 1024;
        const MAX_DATAGRAM: usize = 2048;
        let mut buf = BytesMut::with_capacity(CHUNK);
        loop {
            if buf.capacity() < MAX_DATAGRAM {
                buf.reserve(CHUNK);
            }
            let (n, from) = match self.socket.recv_buf_from(&mut buf).await {
                Ok(v) => v,
                Err(err) => {
                    // ICMP port unreachable and the like surface here on some systems: not fatal.
                    tracing::debug!(%err, "udp recv error");
                    continue;
                }
            };
            let data = buf.split_to(n);
            self.dispatch(Datagram {
                now: Instant::now(),
                from,
                data,
            });
        }
    }

    /// Hands a datagram to the session its source address (or STUN username) routes to.
    pub fn dispatch(&self, datagram: Datagram) {
        let Some(tx) = self.route(datagram.from, &datagram.data) else {
            self.metrics.udp_unrouted.inc();
            return;
        };
        if tx.try_send(datagram).is_err() {
            self.metrics.udp_dropped.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::stun::message::{BINDING_REQUEST, Setter, TransactionId};
    use rtc::stun::textattrs::TextAttribute;
    use std::time::Duration;

    async fn loopback_mux() -> Arc<UdpMux> {
        UdpMux::bind(
            "127.0.0.1:0".parse().unwrap(),
            128 << 10,
            Arc::new(Metrics::default()),
        )
        .await
        .unwrap()
    }

    /// A STUN binding request with this USERNAME.
    fn binding_request(username: &str) -> Vec<u8> {
        let mut msg = Message::new();
        let setters: Vec<Box<dyn Setter>> = vec![
            Box::new(BINDING_REQUEST),
            Box::new(TransactionId::new()),
            Box::new(TextAttribute::new(ATTR_USERNAME, username.into())),
        ];
        msg.build(&setters).unwrap();
        msg.raw
    }

    #[tokio::test]
    async fn the_socket_gets_the_receive_buffer_asked_for() {
        // 128 KiB is under every kernel's default cap, so it must be granted in full.
        let asked = 128 << 10;
        let mux = UdpMux::bind(
            "127.0.0.1:0".parse().unwrap(),
            asked,
            Arc::new(Metrics::default()),
        )
        .await
        .unwrap();
        let granted = socket2::SockRef::from(&*mux.socket)
            .recv_buffer_size()
            .unwrap();
        assert!(granted >= asked, "{granted}");
    }

    #[tokio::test]
    async fn a_flow_socket_takes_its_peers_datagrams_and_only_those() {
        let mux = loopback_mux().await;
        let port = mux.local_addr();
        let publisher = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let other = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let flow = mux.connect_flow(publisher.local_addr().unwrap()).unwrap();
        publisher.send_to(b"\x80media", port).await.unwrap();
        other.send_to(b"\x80stray", port).await.unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), flow.socket.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"\x80media");
        let (n, from) =
            tokio::time::timeout(Duration::from_secs(5), mux.socket.recv_from(&mut buf))
                .await
                .unwrap()
                .unwrap();
        assert_eq!(
            (&buf[..n], from),
            (&b"\x80stray"[..], other.local_addr().unwrap())
        );
        // Replies leave from the shared port, as the peer's ICE checks expect.
        flow.send(b"reply").await;
        let (n, from) = publisher.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], from), (&b"reply"[..], port));
    }

    #[tokio::test]
    async fn what_reaches_a_flow_socket_before_its_connect_goes_to_its_own_session() {
        let mux = loopback_mux().await;
        let port = mux.local_addr();
        let mut other_session = mux.register(2, "other");
        let publisher = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // Sixteen sources: the kernel hashes each to one member of the group, so some surely
        // (all but one time in 65,536) reach the new socket.
        let mut others = Vec::new();
        for _ in 0..16 {
            others.push(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        }
        // The window `connect_flow` cannot close, held open: a bound, unconnected member of
        // the port's group, which the kernel hands some of `other`'s datagrams.
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )
        .unwrap();
        socket.set_nonblocking(true).unwrap();
        socket.set_reuse_port(true).unwrap();
        socket.bind(&port.into()).unwrap();
        let request = binding_request("other:x");
        for other in &others {
            for _ in 0..4 {
                other.send_to(&request, port).await.unwrap();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        socket
            .connect(&publisher.local_addr().unwrap().into())
            .unwrap();
        let flow = FlowSocket {
            socket: Arc::new(UdpSocket::from_std(socket.into()).unwrap()),
            peer: publisher.local_addr().unwrap(),
        };
        publisher.send_to(b"\x80media", port).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (mut ours, mut foreign) = (Vec::new(), 0);
        let mut buf = BytesMut::with_capacity(64 << 10);
        loop {
            match flow.try_recv(&mut buf, Instant::now(), &mux) {
                Ok(Some(d)) => ours.push(d.data),
                Ok(None) => foreign += 1,
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(err) => panic!("{err}"),
            }
        }
        assert_eq!(ours, [&b"\x80media"[..]]);
        assert!(
            foreign > 0,
            "the kernel steered none to the unconnected socket"
        );
        let sources: Vec<SocketAddr> = others.iter().map(|o| o.local_addr().unwrap()).collect();
        let mut delivered = 0;
        while let Ok(d) = other_session.try_recv() {
            assert!(sources.contains(&d.from));
            delivered += 1;
        }
        assert_eq!(
            delivered, foreign,
            "foreign datagrams dispatched to their session"
        );
    }

    #[tokio::test]
    async fn a_port_in_use_is_still_an_error() {
        let metrics = Arc::new(Metrics::default());
        let first = UdpMux::bind("127.0.0.1:0".parse().unwrap(), 128 << 10, metrics.clone())
            .await
            .unwrap();
        let second = UdpMux::bind(first.local_addr(), 128 << 10, metrics).await;
        assert_eq!(second.unwrap_err().kind(), std::io::ErrorKind::AddrInUse);
    }

    #[test]
    fn reads_the_local_ufrag_of_a_binding_request() {
        let request = binding_request("ours:theirs");
        assert_eq!(stun_local_ufrag(&request).as_deref(), Some("ours"));
        assert_eq!(stun_local_ufrag(&request[..19]), None);
        assert_eq!(
            stun_local_ufrag(b"\x80\x60 rtp packet not stun........"),
            None
        );
    }
}
