//! Creating a cluster CA and node certificates with rcgen (used by the `flotilla-certs`
//! command and by tests).
//!
//! Owns the certificate profile: the CA's fixed subject, and a node certificate whose only
//! subject alternative name is [`node_server_name`] of its node id (that is how the node id
//! is bound to the certificate), valid for both TLS server and client authentication, for a
//! finite period ([`DEFAULT_NODE_VALIDITY`] unless asked otherwise).
//! Never verifies certificates: `tls.rs` and `verify.rs` do.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose,
};
use thiserror::Error;

/// How long a node certificate is valid by default: one year.
pub const DEFAULT_NODE_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// How long a cluster CA certificate is valid by default: ten years.
pub const DEFAULT_CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// The longest validity [`ClusterCa`] issues: 100 years.
pub const MAX_VALIDITY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
/// A new certificate's validity starts this long before its issue, so a peer whose clock is
/// a little behind accepts it at once.
const BACKDATE: Duration = Duration::from_secs(3600);

/// The DNS-style name that binds node `id` to a certificate: `node-<id>.flotilla`.
pub fn node_server_name(id: u64) -> String {
    format!("node-{id}.flotilla")
}

/// Why a certificate could not be created.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CertError {
    /// Node id 0 is never valid.
    #[error("node id 0 is not valid")]
    ZeroNodeId,
    /// A validity period of zero or above [`MAX_VALIDITY`].
    #[error("validity {0:?} outside 1 s ..= 100 years")]
    Validity(Duration),
    /// rcgen refused (bad key PEM, unsupported algorithm, ...).
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// A PEM certificate and its PEM private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemPair {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key (PKCS#8), PEM. Keep secret.
    pub key_pem: String,
}

/// A cluster certificate authority that can issue node certificates.
pub struct ClusterCa {
    pem: PemPair,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa").finish_non_exhaustive()
    }
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "flotilla cluster CA");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p
}

/// Sets `p`'s validity to start [`BACKDATE`] before now and to last `validity` from now.
fn set_validity(p: &mut CertificateParams, validity: Duration) -> Result<(), CertError> {
    if validity.is_zero() || validity > MAX_VALIDITY {
        return Err(CertError::Validity(validity));
    }
    let now = time::OffsetDateTime::from(SystemTime::now());
    p.not_before = now - BACKDATE;
    p.not_after = now + validity;
    Ok(())
}

impl ClusterCa {
    /// Creates a new CA with a fresh key, valid for [`DEFAULT_CA_VALIDITY`].
    pub fn generate() -> Result<ClusterCa, CertError> {
        ClusterCa::generate_valid_for(DEFAULT_CA_VALIDITY)
    }

    /// Creates a new CA with a fresh key, valid from now for `validity` (1 s ..=
    /// [`MAX_VALIDITY`]).
    pub fn generate_valid_for(validity: Duration) -> Result<ClusterCa, CertError> {
        let key = KeyPair::generate()?;
        let mut params = ca_params();
        set_validity(&mut params, validity)?;
        let cert = params.self_signed(&key)?;
        let pem = PemPair { cert_pem: cert.pem(), key_pem: key.serialize_pem() };
        Ok(ClusterCa { pem, issuer: Issuer::new(params, key) })
    }

    /// Reloads a CA created by [`ClusterCa::generate`] from its PEM certificate and key, to
    /// issue more node certificates. The CA subject is fixed, so the issuer name and key
    /// identifier of new certificates match the stored CA certificate.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<ClusterCa, CertError> {
        let key = KeyPair::from_pem(key_pem)?;
        let pem = PemPair { cert_pem: cert_pem.to_owned(), key_pem: key_pem.to_owned() };
        Ok(ClusterCa { pem, issuer: Issuer::new(ca_params(), key) })
    }

    /// The CA certificate and key.
    pub fn pem(&self) -> &PemPair {
        &self.pem
    }

    /// Issues a certificate and key for node `id`, valid for [`DEFAULT_NODE_VALIDITY`].
    pub fn issue_node(&self, id: u64) -> Result<PemPair, CertError> {
        self.issue_node_valid_for(id, DEFAULT_NODE_VALIDITY)
    }

    /// Issues a certificate and key for node `id`, valid from now for `validity` (1 s ..=
    /// [`MAX_VALIDITY`]).
    pub fn issue_node_valid_for(&self, id: u64, validity: Duration) -> Result<PemPair, CertError> {
        if id == 0 {
            return Err(CertError::ZeroNodeId);
        }
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(vec![node_server_name(id)])?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("flotilla node {id}"));
        p.distinguished_name = dn;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        p.use_authority_key_identifier_extension = true;
        set_validity(&mut p, validity)?;
        let cert = p.signed_by(&key, &self.issuer)?;
        Ok(PemPair { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}
