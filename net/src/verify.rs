//! The admission policy a peer certificate must meet beyond chaining to a trusted CA, applied
//! inside the TLS handshake on both sides: the end-entity certificate is not a CA, carries
//! an explicit extended key usage for its role (clientAuth for a dialer, serverAuth for an
//! acceptor) and, when it has a key-usage extension, digitalSignature; it names exactly one
//! node; and that node is on the allow-list ([`Policy`]) when the embedder set one.
//!
//! Owns [`Policy`] (the allow-list and its refusal counter), [`LeafInfo`] (what is read from
//! a certificate: its node and its not-after) and the two rustls verifiers that wrap
//! webpki's. Never builds TLS configurations (`tls.rs` does) nor closes connections of a
//! node removed from the list (`endpoint.rs` does).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::event::NodeId;

/// What the admission policy reads from an end-entity certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LeafInfo {
    /// The one node the certificate names (`node-<id>.flotilla`), if exactly one.
    pub node: Option<NodeId>,
    /// When the certificate expires.
    pub not_after: SystemTime,
    is_ca: bool,
    server_auth: bool,
    client_auth: bool,
    /// The key-usage extension allows digitalSignature (or there is none).
    digital_signature: bool,
}

/// The node id a DNS name `node-<id>.flotilla` binds, if it is one.
fn node_of_name(name: &str) -> Option<NodeId> {
    let id = name.strip_prefix("node-")?.strip_suffix(".flotilla")?;
    match id.parse::<u64>() {
        Ok(0) | Err(_) => None,
        Ok(id) => Some(id),
    }
}

impl LeafInfo {
    /// Parses `der`; `None` if it is not a certificate x509-parser can read.
    pub(crate) fn parse(der: &[u8]) -> Option<LeafInfo> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let secs = cert.validity().not_after.timestamp();
        let not_after = UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0));
        let is_ca = matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
        let (server_auth, client_auth) = match cert.extended_key_usage() {
            Ok(Some(eku)) => (eku.value.server_auth, eku.value.client_auth),
            _ => (false, false),
        };
        let digital_signature = match cert.key_usage() {
            Ok(Some(ku)) => ku.value.digital_signature(),
            Ok(None) => true,
            Err(_) => false,
        };
        let mut nodes = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                    nodes.extend(node_of_name(d));
                }
            }
        }
        nodes.dedup();
        let node = if nodes.len() == 1 { nodes.first().copied() } else { None };
        Some(LeafInfo { node, not_after, is_ca, server_auth, client_auth, digital_signature })
    }
}

/// The certificate's role in the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The dialer's certificate, checked by the acceptor.
    Client,
    /// The acceptor's certificate, checked by the dialer.
    Server,
}

/// The allow-list of nodes and the count of certificates it refused. Shared by the
/// verifiers of every TLS configuration (reloads keep it) and the endpoint.
#[derive(Debug, Default)]
pub(crate) struct Policy {
    allowed: RwLock<Option<Arc<HashSet<NodeId>>>>,
    /// Handshakes refused by this policy (a bad certificate profile or a node off the list).
    refused: AtomicU64,
}

impl Policy {
    /// Replaces the allow-list (`None`: every node with a valid certificate).
    pub(crate) fn set_allowed(&self, nodes: Option<HashSet<NodeId>>) {
        // The value is replaced whole: consistent even after a panic elsewhere.
        *self.allowed.write().unwrap_or_else(|e| e.into_inner()) = nodes.map(Arc::new);
    }

    /// Handshakes this policy refused so far.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Counts a connection refused or closed for its node being off the list.
    pub(crate) fn count_refusal(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether `node` may connect.
    pub(crate) fn allows(&self, node: NodeId) -> bool {
        match &*self.allowed.read().unwrap_or_else(|e| e.into_inner()) {
            None => true,
            Some(set) => set.contains(&node),
        }
    }

    /// Checks an end-entity certificate that already chained to a trusted CA.
    fn check(&self, der: &CertificateDer<'_>, role: Role) -> Result<(), rustls::Error> {
        let result = self.check_inner(der, role);
        if result.is_err() {
            self.count_refusal();
        }
        result
    }

    fn check_inner(&self, der: &CertificateDer<'_>, role: Role) -> Result<(), rustls::Error> {
        let bad = |e| Err(rustls::Error::InvalidCertificate(e));
        let Some(leaf) = LeafInfo::parse(der) else { return bad(CertificateError::BadEncoding) };
        let purpose = match role {
            Role::Client => leaf.client_auth,
            Role::Server => leaf.server_auth,
        };
        if leaf.is_ca || !purpose || !leaf.digital_signature {
            return bad(CertificateError::InvalidPurpose);
        }
        match leaf.node {
            Some(node) if self.allows(node) => Ok(()),
            _ => bad(CertificateError::ApplicationVerificationFailure),
        }
    }
}

/// The acceptor's verifier of a dialer's certificate: webpki's, then the [`Policy`].
#[derive(Debug)]
pub(crate) struct ClientVerifier {
    pub inner: Arc<dyn ClientCertVerifier>,
    pub policy: Arc<Policy>,
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let ok = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        self.policy.check(end_entity, Role::Client)?;
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The dialer's verifier of an acceptor's certificate: webpki's (chain and server name),
/// then the [`Policy`].
#[derive(Debug)]
pub(crate) struct ServerVerifier {
    pub inner: Arc<dyn ServerCertVerifier>,
    pub policy: Arc<Policy>,
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ok = self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        self.policy.check(end_entity, Role::Server)?;
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_parse_strictly() {
        assert_eq!(node_of_name("node-7.flotilla"), Some(7));
        assert_eq!(node_of_name("node-0.flotilla"), None);
        assert_eq!(node_of_name("node-7.flotilla.evil"), None);
        assert_eq!(node_of_name("node-x.flotilla"), None);
    }
}
