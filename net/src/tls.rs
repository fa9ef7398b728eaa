//! Mutual TLS: a node's identity (the cluster CAs it trusts, its certificate chain and key,
//! and the files they were read from, for a reload) and the quinn client/server
//! configurations built from it.
//!
//! Owns the chain rules: a peer's certificate must chain to one of the trusted CAs (several
//! may be trusted at once, for a rotation; checked by rustls during the handshake, both
//! ways), the acceptor's certificate must name the node id that was dialed (server name
//! check), and the dialer's certificate must name the node id its hello claims
//! ([`cert_names_node`]); the certificate profile and the allow-list are `verify.rs`'s.
//! There is no plaintext path. Never creates certificates: `certs.rs` does.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::RootCertStore;
use thiserror::Error;

use crate::certs::node_server_name;
use crate::config::ValidNetConfig;
use crate::verify::{ClientVerifier, LeafInfo, Policy, ServerVerifier};

/// The ALPN protocol id of Flotilla's transport.
pub const ALPN: &[u8] = b"flotilla/1";

/// Why a node identity or its TLS configuration could not be built.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM input holds no certificate or key, or is not PEM.
    #[error("bad PEM for {what}: {detail}")]
    Pem {
        /// Which input.
        what: &'static str,
        /// The parser's message.
        detail: String,
    },
    /// The CA certificate cannot be used as a trust anchor.
    #[error("bad CA certificate: {0}")]
    Ca(rustls::Error),
    /// rustls refused the certificate/key pair or the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// The client verifier could not be built.
    #[error("client verifier: {0}")]
    Verifier(String),
    /// QUIC needs TLS 1.3 with an initial cipher suite.
    #[error("QUIC crypto: {0}")]
    Quic(String),
    /// A certificate or key file could not be read.
    #[error("reading {path}: {detail}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        detail: String,
    },
    /// A reload was asked of an identity that was not read from files.
    #[error("the identity was not read from files; nothing to reload")]
    NoFiles,
}

/// The files a [`NodeIdentity`] was read from ([`NodeIdentity::from_files`]), re-read by a
/// reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityFiles {
    /// PEM bundle of the trusted cluster CA certificates (one or more).
    pub ca: PathBuf,
    /// PEM certificate (chain) of this node.
    pub cert: PathBuf,
    /// PEM private key of this node.
    pub key: PathBuf,
}

/// What a node needs to join the cluster's TLS: the CAs to trust (one, or several during a
/// rotation), and its own certificate chain and key (issued for its node id).
pub struct NodeIdentity {
    cas: Vec<CertificateDer<'static>>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    files: Option<IdentityFiles>,
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("NodeIdentity")
            .field("cas", &self.cas.len())
            .field("chain", &self.chain.len())
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Clone for NodeIdentity {
    fn clone(&self) -> Self {
        NodeIdentity {
            cas: self.cas.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            files: self.files.clone(),
        }
    }
}

impl NodeIdentity {
    /// Parses the trusted cluster CA certificates (a PEM bundle of one or more: during a
    /// CA rotation, the old and the new), the node certificate (chain) and its key, all PEM.
    pub fn from_pem(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<NodeIdentity, TlsError> {
        let pem_err =
            |what| move |e: rustls::pki_types::pem::Error| TlsError::Pem { what, detail: e.to_string() };
        let cas = CertificateDer::pem_slice_iter(ca_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem_err("CA certificate"))?;
        if cas.is_empty() {
            return Err(TlsError::Pem { what: "CA certificate", detail: "no certificate".into() });
        }
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem_err("node certificate"))?;
        if chain.is_empty() {
            return Err(TlsError::Pem { what: "node certificate", detail: "no certificate".into() });
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(pem_err("node key"))?;
        Ok(NodeIdentity { cas, chain, key, files: None })
    }

    /// Reads the identity from PEM files (the CA file may hold several CAs) and remembers
    /// them, so [`Endpoint::reload_certs`](crate::Endpoint::reload_certs) can re-read them.
    pub fn from_files(ca: &Path, cert: &Path, key: &Path) -> Result<NodeIdentity, TlsError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path)
                .map_err(|e| TlsError::Read { path: path.to_owned(), detail: e.to_string() })
        };
        let mut id = NodeIdentity::from_pem(&read(ca)?, &read(cert)?, &read(key)?)?;
        id.files = Some(IdentityFiles { ca: ca.to_owned(), cert: cert.to_owned(), key: key.to_owned() });
        Ok(id)
    }

    /// The files this identity was read from, if any.
    pub fn files(&self) -> Option<&IdentityFiles> {
        self.files.as_ref()
    }

    /// Reads the identity anew from the files it was read from.
    pub fn reread(&self) -> Result<NodeIdentity, TlsError> {
        let f = self.files.as_ref().ok_or(TlsError::NoFiles)?;
        NodeIdentity::from_files(&f.ca, &f.cert, &f.key)
    }

    /// When this node's own certificate expires (`None` if it cannot be parsed).
    pub fn not_after(&self) -> Option<SystemTime> {
        self.chain.first().and_then(|c| LeafInfo::parse(c)).map(|l| l.not_after)
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, TlsError> {
        let mut roots = RootCertStore::empty();
        for ca in &self.cas {
            roots.add(ca.clone()).map_err(TlsError::Ca)?;
        }
        Ok(Arc::new(roots))
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        crypto_provider()
    }

    /// The quinn server configuration: requires a client certificate chaining to a trusted
    /// CA and meeting `policy`.
    pub(crate) fn server_config(
        &self,
        cfg: &ValidNetConfig,
        policy: &Arc<Policy>,
    ) -> Result<quinn::ServerConfig, TlsError> {
        let inner =
            rustls::server::WebPkiClientVerifier::builder_with_provider(self.roots()?, Self::provider())
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let verifier = Arc::new(ClientVerifier { inner, policy: policy.clone() });
        let mut tls = rustls::ServerConfig::builder_with_provider(Self::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let quic = QuicServerConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
        let mut sc = quinn::ServerConfig::with_crypto(Arc::new(quic));
        sc.transport_config(transport_config(cfg));
        // Connection attempts quinn holds before the accept loop decides on them; the
        // acceptor's own caps (`max_handshakes`) bound what it then admits.
        sc.max_incoming(cfg.max_handshakes);
        Ok(sc)
    }

    /// The quinn client configuration: presents this node's certificate and trusts only the
    /// cluster CAs, with peers' certificates meeting `policy`.
    pub(crate) fn client_config(
        &self,
        cfg: &ValidNetConfig,
        policy: &Arc<Policy>,
    ) -> Result<quinn::ClientConfig, TlsError> {
        let inner =
            rustls::client::WebPkiServerVerifier::builder_with_provider(self.roots()?, Self::provider())
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let verifier = Arc::new(ServerVerifier { inner, policy: policy.clone() });
        let mut tls = rustls::ClientConfig::builder_with_provider(Self::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let quic = QuicClientConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
        let mut cc = quinn::ClientConfig::new(Arc::new(quic));
        cc.transport_config(transport_config(cfg));
        Ok(cc)
    }
}

/// Largest `max_udp_payload` with UDP segmentation offload left on.
const GSO_MAX_PAYLOAD: u16 = 16 * 1024;

fn transport_config(cfg: &ValidNetConfig) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(cfg.keep_alive));
    // Validation bounds idle_timeout to 600 s, far below QUIC's 2^62 ms limit.
    t.max_idle_timeout(quinn::IdleTimeout::try_from(cfg.idle_timeout).ok());
    // The message lane (the hello's stream) plus the bulk streams; one control lane each
    // way (unidirectional).
    t.max_concurrent_bidi_streams((cfg.max_bulk_streams + 1).into());
    t.max_concurrent_uni_streams(1u32.into());
    // Windows: big enough to fill a LAN or loopback pipe, small enough (connection window
    // twice a stream's) that what is in flight fits the receiver's socket buffer: a
    // datagram dropped there is taken for congestion and shrinks the sending window.
    // Validation bounds stream_window to 256 MiB, within a VarInt.
    let stream_window = cfg.stream_window as u64;
    t.stream_receive_window(quinn::VarInt::from_u64(stream_window).unwrap_or(quinn::VarInt::MAX));
    t.receive_window(quinn::VarInt::from_u64(2 * stream_window).unwrap_or(quinn::VarInt::MAX));
    t.send_window(2 * stream_window);
    t.initial_rtt(Duration::from_millis(10));
    // Path MTU discovery up to the configured payload size (quinn starts at 1200).
    let mut mtud = quinn::MtuDiscoveryConfig::default();
    mtud.upper_bound(cfg.max_udp_payload);
    t.mtu_discovery_config(Some(mtud));
    // Large datagrams already amortise a send call; a GSO batch of them would exceed the
    // kernel's 64 KiB limit, be lost, and make quinn fall back to 1200-byte packets.
    t.enable_segmentation_offload(cfg.max_udp_payload <= GSO_MAX_PAYLOAD);
    // Fewer acknowledgements sent on their own (see `NetConfig::ack_eliciting_threshold`).
    let mut acks = quinn::AckFrequencyConfig::default();
    acks.ack_eliciting_threshold(cfg.ack_eliciting_threshold.into());
    acks.max_ack_delay(Some(cfg.max_ack_delay));
    t.ack_frequency_config(Some(acks));
    Arc::new(t)
}

/// Whether the end-entity certificate in `chain` names node `id` (its subject alternative
/// name is [`node_server_name`]`(id)`). The chain itself was verified against the cluster
/// CA during the handshake.
pub fn cert_names_node(chain: &[CertificateDer<'_>], id: u64) -> bool {
    let Some(leaf) = chain.first() else { return false };
    let Ok(ee) = webpki::EndEntityCert::try_from(leaf) else { return false };
    let Ok(name) = ServerName::try_from(node_server_name(id)) else { return false };
    ee.verify_is_valid_for_subject_name(&name).is_ok()
}

/// The rustls crypto provider of the transport (also for the embedder's own TLS links, as
/// the kv server's node channel): ring, its TLS 1.3 suites, AES-128-GCM first. With
/// hardware AES that is the cheapest per byte (10 rounds against AES-256's 14), and the
/// bulk of QUIC's CPU is packet protection. AES-256-GCM and ChaCha20-Poly1305 stay
/// accepted.
///
/// rustls 0.23.48 deprecates ring's provider because ring has no post-quantum key
/// exchange; the alternative, aws-lc-rs, needs a C toolchain with cmake to build. The
/// classic ECDHE groups stay in use here until that trade is made.
#[allow(deprecated)]
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::ring::cipher_suite as cs;
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites =
        vec![cs::TLS13_AES_128_GCM_SHA256, cs::TLS13_AES_256_GCM_SHA384, cs::TLS13_CHACHA20_POLY1305_SHA256];
    Arc::new(p)
}
