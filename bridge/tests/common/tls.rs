//! A test CA and the certificates it issues, for the bridge's HTTPS; clients trusting it.
// Each test binary compiles this module on its own and uses only part of it; what one binary
// leaves unused is dead code there, though another uses it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SerialNumber};
use tokio_rustls::rustls::client::Resumption;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use super::netns::NS_BRIDGE_IP;
use super::proc::Scratch;

/// A CA made for one test.
pub(crate) struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// Its certificate, PEM.
    pub(crate) pem: String,
}

/// A certificate the CA issued: the chain the server sends (leaf, then the CA, as certbot's
/// `fullchain.pem`) and the leaf's key.
pub(crate) struct Leaf {
    pub(crate) chain_pem: String,
    pub(crate) key_pem: String,
    pub(crate) der: CertificateDer<'static>,
}

impl TestCa {
    pub(crate) fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "whip-bridge test CA");
        let pem = params.self_signed(&key).unwrap().pem();
        Self {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// A leaf for `localhost`, 127.0.0.1 and the test namespace's bridge address, named `name`
    /// (its CN), with serial `serial`.
    pub(crate) fn leaf(&self, name: &str, serial: u64) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let names = vec!["localhost".into(), "127.0.0.1".into(), NS_BRIDGE_IP.into()];
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.serial_number = Some(SerialNumber::from(serial));
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            chain_pem: format!("{}{}", cert.pem(), self.pem),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    /// A client configuration trusting this CA only, offering `alpn`.
    pub(crate) fn client_config(&self, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        client_config(
            CertificateDer::from_pem_slice(self.pem.as_bytes()).unwrap(),
            alpn,
        )
    }
}

/// A client configuration trusting `ca` only, offering `alpn`.
fn client_config(ca: CertificateDer<'static>, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // Every connection does a full handshake: a resumed session presents no certificate, and
    // rustls then reports the one of the session resumed, which hides a reload.
    config.resumption = Resumption::disabled();
    Arc::new(config)
}

/// A client configuration trusting the CA in the PEM file `ca`.
pub(crate) fn client_config_from(ca: &Path) -> Arc<ClientConfig> {
    client_config(CertificateDer::from_pem_file(ca).unwrap(), &[])
}

/// Writes `leaf`'s chain and key to `cert` and `key`.
pub(crate) fn write_leaf(leaf: &Leaf, cert: &Path, key: &Path) {
    std::fs::write(cert, &leaf.chain_pem).unwrap();
    std::fs::write(key, &leaf.key_pem).unwrap();
}

/// The test CA of a scratch folder (made by [`https_args`]).
pub(crate) fn scratch_ca(scratch: &Scratch) -> PathBuf {
    scratch.file("tls-ca.pem")
}

/// Makes a test CA and a certificate for the bridge in `scratch`, and gives the bridge's
/// arguments to serve HTTPS with it; clients trust [`scratch_ca`].
pub(crate) fn https_args(scratch: &Scratch) -> Vec<String> {
    let ca = TestCa::new();
    std::fs::write(scratch_ca(scratch), &ca.pem).unwrap();
    let (cert, key) = (scratch.file("tls-cert.pem"), scratch.file("tls-key.pem"));
    write_leaf(&ca.leaf("bridge", 1), &cert, &key);
    let path = |p: PathBuf| p.to_str().unwrap().to_owned();
    vec![
        "--tls-cert".into(),
        path(cert),
        "--tls-key".into(),
        path(key),
    ]
}
