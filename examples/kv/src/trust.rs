//! Which nodes a node trusts, kept in step with the cluster's directory, and the reload of
//! its certificates.
//!
//! The allow-list ([`AllowList`], its rule in [`allowed_nodes`]): the nodes the meta
//! group's directory holds, plus this node; both the QUIC transport
//! ([`flotilla_net::Endpoint::set_allowed_nodes`]) and the node channel
//! ([`crate::node_channel`]) admit only those, so a node removed from the cluster
//! (`remove-servers` unregisters it last) is refused with its still-valid certificate: its
//! QUIC connections are closed and new handshakes fail; its node channel requests get a
//! refusal. The node updates the list from the directory hook after every applied change
//! of the directory (and when a snapshot restores it).
//!
//! Bootstrap: while this node's directory is empty (a new node that has not received the
//! meta group yet, or the bootstrap node before it registered itself) there is no list:
//! every node with a certificate of a trusted CA is admitted, as before the directory
//! existed, because the node cannot know its cluster yet and the cluster must reach it to
//! send it the meta group. A node joining an existing cluster is registered
//! (`FLOTILLA.REGISTER`, `add-servers`' first step) before any group adds it, so the
//! members admit it from then on; a member whose copy of the directory lags behind refuses
//! it until it applies the registration (the transport redials, forwarding retries). On a
//! restart the list follows the directory as its log is replayed, so it may briefly be a
//! past one.
//!
//! Certificates ([`load_certs`], [`read_certs`]): the QUIC identity and the node channel's
//! TLS configurations are built from one read of `ca_cert`, `node_cert` and `node_key`, and
//! the node certificate must name this node; a reload (`FLOTILLA.RELOADCERTS`, SIGHUP)
//! re-reads the same files and replaces both only if everything parses.
//!
//! Owns the rule, the current list, and certificate loading. Never decides membership
//! (the directory does), never touches sockets, never logs key material.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, RwLock};

use flotilla_net::NodeIdentity;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use thiserror::Error;

use crate::acl::Secret;
use crate::config::CertFiles;
use crate::node_channel::{peer_node_id, ChannelError, NodeTls};
use crate::sm::NodeInfo;

/// The nodes admitted by a node whose id is `me` and whose directory is `dir`: `None`
/// (every node with a trusted certificate) while the directory is empty, else the
/// directory's nodes and `me`.
pub fn allowed_nodes(me: u64, dir: &BTreeMap<u64, NodeInfo>) -> Option<HashSet<u64>> {
    if dir.is_empty() {
        return None;
    }
    Some(dir.keys().copied().chain([me]).collect())
}

/// A list for logs and INFO: `any` for no list, else the ids in order, comma separated.
pub fn describe_allowed(nodes: Option<&HashSet<u64>>) -> String {
    match nodes {
        None => "any".into(),
        Some(set) => {
            let mut ids: Vec<u64> = set.iter().copied().collect();
            ids.sort_unstable();
            ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
        }
    }
}

/// The allow-list in force on this node (cheap to clone; clones share it).
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    nodes: Arc<RwLock<Option<Arc<HashSet<u64>>>>>,
}

impl AllowList {
    /// Whether `node` is admitted now.
    pub fn allows(&self, node: u64) -> bool {
        match &*self.nodes.read().unwrap_or_else(|e| e.into_inner()) {
            None => true,
            Some(set) => set.contains(&node),
        }
    }

    /// The list now (`None`: no list, every node with a trusted certificate).
    pub fn get(&self) -> Option<Arc<HashSet<u64>>> {
        self.nodes.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sets the list from the directory ([`allowed_nodes`]). Returns the new list when it
    /// changed (for the transport), `None` when it is the same as before.
    pub fn update(&self, me: u64, dir: &BTreeMap<u64, NodeInfo>) -> Option<Option<HashSet<u64>>> {
        let new = allowed_nodes(me, dir);
        let mut cur = self.nodes.write().unwrap_or_else(|e| e.into_inner());
        if cur.as_deref() == new.as_ref() {
            return None;
        }
        // The value is replaced whole: consistent even after a panic elsewhere.
        *cur = new.clone().map(Arc::new);
        Some(new)
    }
}

/// Why certificates could not be loaded (at start or on a reload: the node then keeps the
/// certificates it has).
#[derive(Debug, Error)]
pub enum CertError {
    /// A file could not be read.
    #[error("{key} {path}: {error}")]
    Read {
        /// The configuration key naming the file.
        key: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The QUIC transport refused the certificates or the key.
    #[error("QUIC transport: {0}")]
    Net(String),
    /// The node channel refused the certificates or the key.
    #[error("node channel: {0}")]
    Channel(#[from] ChannelError),
    /// The node certificate does not name this node (`node-<id>.flotilla`), or names
    /// several nodes.
    #[error("node_cert names {names}, not this node ({me})")]
    WrongNode {
        /// What the certificate names.
        names: String,
        /// This node's id.
        me: u64,
    },
}

/// A node's certificates, ready for both channels.
pub struct Certs {
    /// The QUIC transport's identity.
    pub identity: NodeIdentity,
    /// The node channel's TLS configurations.
    pub channel: NodeTls,
}

impl std::fmt::Debug for Certs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Certs { .. }")
    }
}

/// Builds node `me`'s certificates from PEM: the trusted CAs, its certificate (chain),
/// its key. The certificate must name node `me`.
pub fn load_certs(me: u64, ca_pem: &str, cert_pem: &str, key_pem: &Secret) -> Result<Certs, CertError> {
    let channel = NodeTls::new(ca_pem, cert_pem, key_pem)?;
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>();
    // NodeTls::new parsed the same PEM, so this only fails if it did too.
    let names = chain.ok().as_deref().and_then(peer_node_id);
    if names != Some(me) {
        let names = names.map_or_else(|| "no single node".to_string(), |n| format!("node {n}"));
        return Err(CertError::WrongNode { names, me });
    }
    let identity = NodeIdentity::from_pem(ca_pem, cert_pem, key_pem.expose())
        .map_err(|e| CertError::Net(e.to_string()))?;
    Ok(Certs { identity, channel })
}

/// Reads node `me`'s certificate files anew and builds its certificates ([`load_certs`]).
pub fn read_certs(me: u64, files: &CertFiles) -> Result<Certs, CertError> {
    let read = |key, path: &std::path::Path| {
        std::fs::read_to_string(path).map_err(|error| CertError::Read { key, path: path.to_owned(), error })
    };
    let ca = read("ca_cert", &files.ca)?;
    let cert = read("node_cert", &files.cert)?;
    let key = Secret::new(read("node_key", &files.key)?);
    load_certs(me, &ca, &cert, &key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(ids: &[u64]) -> BTreeMap<u64, NodeInfo> {
        ids.iter()
            .map(|&i| (i, NodeInfo { peer: format!("127.0.0.1:{i}"), client: format!("127.0.0.1:{i}") }))
            .collect()
    }

    /// No list while the directory is empty; then the directory's nodes and this one; a
    /// node unregistered is off the list; an unchanged directory changes nothing.
    #[test]
    fn the_list_follows_the_directory() {
        assert_eq!(allowed_nodes(2, &dir(&[])), None);
        assert_eq!(allowed_nodes(2, &dir(&[1])), Some(HashSet::from([1, 2])));
        let a = AllowList::default();
        assert!(a.allows(9));
        assert_eq!(a.update(2, &dir(&[])), None, "still no list");
        assert_eq!(a.update(2, &dir(&[1, 2, 3])), Some(Some(HashSet::from([1, 2, 3]))));
        assert!(a.allows(3) && !a.allows(9));
        assert_eq!(a.update(2, &dir(&[1, 2, 3])), None, "unchanged");
        assert_eq!(a.update(2, &dir(&[1, 2])), Some(Some(HashSet::from([1, 2]))));
        assert!(!a.allows(3) && a.allows(2) && a.allows(1));
        assert_eq!(a.get().as_deref(), Some(&HashSet::from([1, 2])));
        assert_eq!(describe_allowed(a.get().as_deref()), "1,2");
        assert_eq!(describe_allowed(None), "any");
    }

    /// A certificate of another node, or garbage, is refused; this node's is loaded.
    #[test]
    fn certificates_must_name_this_node() {
        let ca = flotilla_net::ClusterCa::generate().unwrap();
        let p = ca.issue_node(3).unwrap();
        let key = Secret::new(p.key_pem.clone());
        assert!(load_certs(3, &ca.pem().cert_pem, &p.cert_pem, &key).is_ok());
        let e = load_certs(4, &ca.pem().cert_pem, &p.cert_pem, &key).unwrap_err();
        assert_eq!(e.to_string(), "node_cert names node 3, not this node (4)");
        assert!(load_certs(3, "junk", &p.cert_pem, &key).is_err());
        let d = tempfile::tempdir().unwrap();
        let files =
            CertFiles { ca: d.path().join("ca"), cert: d.path().join("cert"), key: d.path().join("key") };
        let e = read_certs(3, &files).unwrap_err();
        assert!(e.to_string().starts_with("ca_cert "), "{e}");
    }
}
