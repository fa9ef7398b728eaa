//! Creating a cluster CA and node certificates with rcgen (used by the `flotilla-certs`
//! command and by tests).
//!
//! Owns the certificate profile: the CA's fixed subject, and a node certificate whose only
//! subject alternative name is [`node_server_name`] of its node id (that is how the node id
//! is bound to the certificate), valid for both TLS server and client authentication.
//! Never verifies certificates: `tls.rs` does.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose,
};
use thiserror::Error;

/// The DNS-style name that binds node `id` to a certificate: `node-<id>.flotilla`.
pub fn node_server_name(id: u64) -> String {
    format!("node-{id}.flotilla")
}

/// Why a certificate could not be created.
#[derive(Debug, Error)]
pub enum CertError {
    /// Node id 0 is never valid.
    #[error("node id 0 is not valid")]
    ZeroNodeId,
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

impl ClusterCa {
    /// Creates a new CA with a fresh key.
    pub fn generate() -> Result<ClusterCa, CertError> {
        let key = KeyPair::generate()?;
        let params = ca_params();
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

    /// Issues a certificate and key for node `id`.
    pub fn issue_node(&self, id: u64) -> Result<PemPair, CertError> {
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
        let cert = p.signed_by(&key, &self.issuer)?;
        Ok(PemPair { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}
