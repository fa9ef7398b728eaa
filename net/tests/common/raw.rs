//! A hand-driven QUIC client for the hostile tests: it presents whatever certificate (or
//! none) it is given, dials with the transport's ALPN, and can stall or send a hello of its
//! own choosing. Its own tokio runtime; loopback only.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use flotilla_net::frame::Hello;
use flotilla_net::tls::ALPN;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A client endpoint on one UDP socket, and the runtime it runs on.
pub struct RawClient {
    pub rt: tokio::runtime::Runtime,
    pub ep: quinn::Endpoint,
}

/// A cluster CA in rcgen form, to sign deliberately wrong certificates (its subject is
/// fixed, as `ClusterCa` makes it).
pub fn issuer(ca: &flotilla_net::ClusterCa) -> rcgen::Issuer<'static, rcgen::KeyPair> {
    let key = rcgen::KeyPair::from_pem(&ca.pem().key_pem).unwrap();
    let mut p = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, "flotilla cluster CA");
    p.distinguished_name = dn;
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    rcgen::Issuer::new(p, key)
}

/// A node certificate for `id` built from `params` tweaks, signed by `ca`: returns (cert
/// PEM, key PEM).
pub fn custom_node_cert(
    ca: &flotilla_net::ClusterCa,
    id: u64,
    tweak: impl FnOnce(&mut rcgen::CertificateParams),
) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(vec![flotilla_net::node_server_name(id)]).unwrap();
    p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages =
        vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    p.use_authority_key_identifier_extension = true;
    tweak(&mut p);
    let cert = p.signed_by(&key, &issuer(ca)).unwrap();
    (cert.pem(), key.serialize_pem())
}

impl RawClient {
    /// A client trusting `ca_pem`, presenting `cert` (chain PEM, key PEM) if given.
    pub fn new(ca_pem: &str, cert: Option<(&str, &str)>) -> RawClient {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = flotilla_net::tls::crypto_provider();
        let b = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots);
        let mut tls = match cert {
            Some((c, k)) => {
                let chain = CertificateDer::pem_slice_iter(c.as_bytes()).map(|c| c.unwrap()).collect();
                b.with_client_auth_cert(chain, PrivateKeyDer::from_pem_slice(k.as_bytes()).unwrap()).unwrap()
            }
            None => b.with_no_client_auth(),
        };
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
        let mut cc = quinn::ClientConfig::new(Arc::new(quic));
        let mut t = quinn::TransportConfig::default();
        t.keep_alive_interval(Some(Duration::from_millis(200)));
        cc.transport_config(Arc::new(t));
        let ep = {
            let _g = rt.enter();
            let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
            ep.set_default_client_config(cc);
            ep
        };
        RawClient { rt, ep }
    }

    /// Dials node `node` at `addr`; the connection once the handshake completes on this
    /// side, or why it failed (`None`: no answer within `limit`).
    pub fn connect(
        &self,
        addr: SocketAddr,
        node: u64,
        limit: Duration,
    ) -> Result<quinn::Connection, Option<quinn::ConnectionError>> {
        let ep = self.ep.clone();
        self.rt.block_on(async move {
            let c = ep.connect(addr, &flotilla_net::node_server_name(node)).map_err(|_| None)?;
            match tokio::time::timeout(limit, c).await {
                Ok(r) => r.map_err(Some),
                Err(_) => Err(None),
            }
        })
    }

    /// Starts `n` dials at once without waiting for them; the connections that complete
    /// within `limit` (their handshakes), stalled: no stream is opened.
    pub fn flood(&self, addr: SocketAddr, node: u64, n: usize, limit: Duration) -> Vec<quinn::Connection> {
        let ep = self.ep.clone();
        self.rt.block_on(async move {
            let mut tasks = Vec::new();
            for _ in 0..n {
                let ep = ep.clone();
                tasks.push(tokio::spawn(async move {
                    let c = ep.connect(addr, &flotilla_net::node_server_name(node)).ok()?;
                    tokio::time::timeout(limit, c).await.ok()?.ok()
                }));
            }
            let mut out = Vec::new();
            for t in tasks {
                if let Ok(Some(c)) = t.await {
                    out.push(c);
                }
            }
            out
        })
    }

    /// Sends a hello on a new stream of `conn` (and keeps the stream open).
    pub fn hello(
        &self,
        conn: &quinn::Connection,
        hello: Hello,
    ) -> Option<(quinn::SendStream, quinn::RecvStream)> {
        let conn = conn.clone();
        self.rt.block_on(async move {
            let (mut s, r) = tokio::time::timeout(Duration::from_secs(2), conn.open_bi()).await.ok()?.ok()?;
            s.write_all(&hello.encode()).await.ok()?;
            Some((s, r))
        })
    }

    /// Waits up to `limit` for `conn` to be closed; its close reason.
    pub fn closed(&self, conn: &quinn::Connection, limit: Duration) -> Option<quinn::ConnectionError> {
        let conn = conn.clone();
        self.rt.block_on(async move { tokio::time::timeout(limit, conn.closed()).await.ok() })
    }
}

/// Whether a close reason is a TLS failure during the handshake (QUIC crypto error codes
/// 0x100 ..= 0x1ff), as opposed to an application close after it.
pub fn is_tls_failure(e: &quinn::ConnectionError) -> bool {
    match e {
        quinn::ConnectionError::ConnectionClosed(c) => {
            let code = u64::from(c.error_code);
            (0x100..=0x1ff).contains(&code)
        }
        quinn::ConnectionError::TransportError(t) => {
            let code = u64::from(t.code);
            (0x100..=0x1ff).contains(&code)
        }
        _ => false,
    }
}
