//! HTTPS: the certificate and key of `--tls-cert`/`--tls-key`, reloaded when their files change,
//! and a listener that hands `axum::serve` TLS streams instead of TCP ones.
//!
//! Why a [`Listener`] for `axum::serve` rather than an accept loop of our own over hyper-util, or
//! the `axum-server` crate: `axum::serve` already runs hyper-util's HTTP/1.1 + HTTP/2 server with
//! graceful shutdown and `ConnectInfo`, exactly as for plain HTTP; TLS only adds the handshake, so
//! the handshake is all this module adds. `axum-server` would carry a second copy of that server
//! code and pins of its own on hyper and rustls.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use axum::serve::Listener;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;

use crate::metrics::Metrics;

/// How often the certificate files are looked at. Renewals happen days ahead of expiry, so a few
/// seconds late costs nothing, and two `stat`s every 2 s cost nothing either.
pub const RELOAD_POLL: Duration = Duration::from_secs(2);

/// A client must finish its handshake within this; one that connects and says nothing would
/// otherwise hold a task and a socket for good.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a certificate and key could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read, or is not PEM of the kind expected.
    #[error("{path}: {source}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// Why.
        source: rustls::pki_types::pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("{0}: no certificate in the file")]
    NoCertificate(PathBuf),
    /// The key is unusable, or does not belong to the certificate.
    #[error("{cert} with {key}: {source}")]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why.
        source: rustls::Error,
    },
}

/// The certificate served, and the files it comes from; a [`ResolvesServerCert`] so that a
/// reloaded pair serves every handshake from then on, with no new [`ServerConfig`].
#[derive(Debug)]
pub struct Certificates {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' modification times when last loaded (or tried).
    stamp: Mutex<Stamp>,
}

type Stamp = (Option<SystemTime>, Option<SystemTime>);

impl Certificates {
    /// Loads the pair (the certificate file holds the leaf first, then its chain).
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        // Stamped before reading: a change made while loading is seen at the next poll.
        let stamp = stamp(cert_path, key_path);
        Ok(Self {
            current: RwLock::new(Arc::new(load_pair(cert_path, key_path)?)),
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            stamp: Mutex::new(stamp),
        })
    }

    /// The certificate files.
    pub fn paths(&self) -> (&Path, &Path) {
        (&self.cert_path, &self.key_path)
    }

    /// The pair served now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        // Only a pointer is written under the lock, so a poisoned one still holds a valid pair.
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Loads the pair again if either file changed since the last try: `None` if neither did.
    /// A pair that does not load leaves the old one serving; it is tried again when a file
    /// changes again (a renewal that writes the certificate, then the key, is caught between
    /// them at worst once).
    pub fn reload_if_changed(&self) -> Option<Result<(), TlsError>> {
        let now = stamp(&self.cert_path, &self.key_path);
        let mut last = self.stamp.lock().unwrap_or_else(PoisonError::into_inner);
        if *last == now {
            return None;
        }
        *last = now;
        Some(load_pair(&self.cert_path, &self.key_path).map(|pair| {
            *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(pair);
        }))
    }

    /// The TLS settings served: this pair, HTTP/2 and HTTP/1.1 by ALPN.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Polls the files every [`RELOAD_POLL`] and serves a changed pair from then on (runs until
    /// aborted).
    pub async fn watch(self: Arc<Self>, metrics: Arc<Metrics>) {
        let mut tick = tokio::time::interval(RELOAD_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // Reading two small files; not worth a blocking-pool hop every 2 s.
            match self.reload_if_changed() {
                None => {}
                Some(Ok(())) => {
                    metrics.tls_reloaded(true);
                    tracing::info!(cert = %self.cert_path.display(), "TLS certificate reloaded");
                }
                Some(Err(err)) => {
                    metrics.tls_reloaded(false);
                    tracing::warn!(%err, "TLS certificate changed on disk but does not load; \
                                          still serving the previous one");
                }
            }
        }
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn stamp(cert: &Path, key: &Path) -> Stamp {
    // `metadata` follows symbolic links: certbot's live/ names are links into archive/, and a
    // renewal points them at new files with new times.
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    (modified(cert), modified(key))
}

fn load_pair(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, TlsError> {
    let pem_error = |path: &Path| {
        let path = path.to_owned();
        move |source| TlsError::Pem { path, source }
    };
    let chain = CertificateDer::pem_file_iter(cert_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(pem_error(cert_path))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert_path.to_owned()));
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(pem_error(key_path))?;
    CertifiedKey::from_der(chain, key, &rustls::crypto::ring::default_provider()).map_err(
        |source| TlsError::Pair {
            cert: cert_path.to_owned(),
            key: key_path.to_owned(),
            source,
        },
    )
}

/// A TCP listener whose connections are served once their TLS handshake is done. Handshakes run
/// side by side (a slow client delays nobody), each bounded in time (10 s); a failed
/// one is logged at debug and forgotten.
#[derive(Debug)]
pub struct TlsListener {
    tcp: TcpListener,
    config: Arc<ServerConfig>,
    /// Dropped with the listener when the server stops, which aborts the handshakes under way.
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
}

impl TlsListener {
    /// Serves TLS with `config` on an already bound listener.
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> Self {
        Self {
            tcp,
            config,
            handshakes: JoinSet::new(),
        }
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    // Cancel-safe, as `axum::serve` needs: both futures raced are, and an accepted socket is in
    // the set before the next await.
    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                accepted = self.tcp.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        let handshake = TlsAcceptor::from(self.config.clone()).accept(tcp);
                        self.handshakes.spawn(async move {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                                Ok(Ok(tls)) => Some((tls, peer)),
                                Ok(Err(err)) => {
                                    tracing::debug!(%peer, %err, "TLS handshake failed");
                                    None
                                }
                                Err(_) => {
                                    tracing::debug!(%peer, "TLS handshake timed out");
                                    None
                                }
                            }
                        });
                    }
                    Err(err) => accept_failed(err).await,
                },
                Some(Ok(Some(done))) = self.handshakes.join_next(),
                    if !self.handshakes.is_empty() => return done,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// What `axum::serve`'s own TCP listener does on an accept error: a connection reset before it
/// was accepted is nothing; anything else (out of file descriptors) is logged and waited out.
async fn accept_failed(err: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        err.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(%err, "accepting a connection failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_mismatched_pair_is_refused_with_the_file_named() {
        let dir = std::env::temp_dir().join(format!("bridge-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let err = Certificates::load(&cert, &key).unwrap_err().to_string();
        assert!(err.contains("cert.pem"), "{err}");
        std::fs::write(&cert, "not pem").unwrap();
        std::fs::write(&key, "not pem").unwrap();
        let err = Certificates::load(&cert, &key).unwrap_err().to_string();
        assert!(err.contains("no certificate"), "{err}");
        let one = rcgen::generate_simple_self_signed(["localhost".to_owned()]).unwrap();
        let other = rcgen::generate_simple_self_signed(["localhost".to_owned()]).unwrap();
        std::fs::write(&cert, one.cert.pem()).unwrap();
        std::fs::write(&key, other.signing_key.serialize_pem()).unwrap();
        let err = Certificates::load(&cert, &key).unwrap_err().to_string();
        assert!(err.contains("key.pem") && err.contains("match"), "{err}");
        std::fs::write(&key, one.signing_key.serialize_pem()).unwrap();
        assert!(Certificates::load(&cert, &key).is_ok());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
