//! Mutual TLS admission: only certificates of the cluster CA, and only for the node id
//! they name. Each refusal test has a positive twin so it cannot pass vacuously.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use flotilla_net::{ClusterCa, DropReason, Event, Inbox, NodeIdentity};

/// Sends from `e` to node `to` until a frame arrives in `inbox` or `limit` passes.
fn delivered(e: &flotilla_net::Endpoint, to: u64, inbox: &mut Inbox, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut tag = 0;
    while Instant::now() < deadline {
        let _ = e.send(to, tag, Bytes::from_static(b"ping"));
        tag += 1;
        if let Ok(Event::Frame { .. }) = inbox.recv_timeout(Duration::from_millis(100)) {
            return true;
        }
    }
    false
}

fn no_peer_up(inbox: &mut Inbox, limit: Duration) -> bool {
    wait_for(inbox, limit, |e| matches!(e, Event::PeerUp { .. } | Event::Frame { .. })).is_none()
}

fn pair(a: NodeIdentity, a_id: u64, b: NodeIdentity, b_id: u64) -> [(flotilla_net::Endpoint, Inbox); 2] {
    let any = "127.0.0.1:0".parse().unwrap();
    let ea = start(test_config(a_id, any).validate().unwrap(), &a);
    let eb = start(test_config(b_id, any).validate().unwrap(), &b);
    ea.0.set_peer_addr(b_id, eb.0.local_addr().unwrap());
    eb.0.set_peer_addr(a_id, ea.0.local_addr().unwrap());
    [ea, eb]
}

#[test]
fn certificate_of_another_ca_is_refused() {
    let ca = ClusterCa::generate().unwrap();
    let rogue_ca = ClusterCa::generate().unwrap();
    // Positive twin: same CA connects.
    let [(e1, mut i1), (e2, _i2)] = pair(identity(&ca, 1), 1, identity(&ca, 2), 2);
    assert!(delivered(&e2, 1, &mut i1, Duration::from_secs(5)));
    drop((e1, e2));

    // Node 2's certificate is signed by another CA (and it trusts that CA's node 1 too).
    let rogue = {
        let n = rogue_ca.issue_node(2).unwrap();
        NodeIdentity::from_pem(&ca.pem().cert_pem, &n.cert_pem, &n.key_pem).unwrap()
    };
    let [(e1, mut i1), (e2, mut i2)] = pair(identity(&ca, 1), 1, rogue, 2);
    e2.send(1, 42, Bytes::from_static(b"let me in")).unwrap();
    let ev = wait_for(&mut i2, Duration::from_secs(5), |e| matches!(e, Event::Dropped { .. }));
    assert_eq!(ev, Some(Event::Dropped { to: 1, tags: vec![42], reason: DropReason::Unreachable }));
    assert!(no_peer_up(&mut i1, Duration::from_millis(500)));
    assert!(e1.stats().refused >= 1, "{:?}", e1.stats());
    assert_eq!(e1.stats().connections, 0);
}

#[test]
fn certificate_naming_node_2_claiming_node_3_is_refused() {
    let ca = ClusterCa::generate().unwrap();
    // Positive twin: node 3 with its own certificate is admitted.
    let [(e1, mut i1), (e3, _i3)] = pair(identity(&ca, 1), 1, identity(&ca, 3), 3);
    assert!(delivered(&e3, 1, &mut i1, Duration::from_secs(5)));
    drop((e1, e3));

    // An endpoint configured as node 3 presenting node 2's (valid) certificate.
    let [(e1, mut i1), (e3, mut i3)] = pair(identity(&ca, 1), 1, identity(&ca, 2), 3);
    e3.send(1, 7, Bytes::from_static(b"i am 3")).unwrap();
    let ev = wait_for(&mut i3, Duration::from_secs(5), |e| matches!(e, Event::Dropped { .. }));
    assert_eq!(ev, Some(Event::Dropped { to: 1, tags: vec![7], reason: DropReason::Unreachable }));
    assert!(no_peer_up(&mut i1, Duration::from_millis(500)));
    assert!(e1.stats().refused >= 1);
    assert_eq!(e1.stats().connections, 0);

    // And the other way: node 1 dials "node 3" but reaches a server whose certificate
    // names node 2: the server-name check refuses it.
    e1.send(3, 8, Bytes::from_static(b"are you 3?")).unwrap();
    let ev = wait_for(&mut i1, Duration::from_secs(5), |e| matches!(e, Event::Dropped { .. }));
    assert_eq!(ev, Some(Event::Dropped { to: 3, tags: vec![8], reason: DropReason::Unreachable }));
    assert!(no_peer_up(&mut i3, Duration::from_millis(300)));
}

#[test]
fn flotilla_certs_command_creates_a_working_cluster_pki() {
    let dir: PathBuf = std::env::temp_dir().join(format!("flotilla-certs-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let bin = env!("CARGO_BIN_EXE_flotilla-certs");
    let out = Command::new(bin).args(["init", dir.to_str().unwrap(), "--nodes", "1,2"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A later node from the reloaded CA.
    let out = Command::new(bin).args(["node", dir.to_str().unwrap(), "3"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Refuses to overwrite, and refuses node id 0.
    assert!(!Command::new(bin).args(["node", dir.to_str().unwrap(), "3"]).status().unwrap().success());
    assert!(!Command::new(bin).args(["node", dir.to_str().unwrap(), "0"]).status().unwrap().success());
    // Private keys are readable by their owner only.
    #[cfg(unix)]
    for key in ["ca.key", "node-1.key", "node-3.key"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(key)).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{key} has mode {mode:o}");
    }
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    let id = |n: u64| {
        NodeIdentity::from_pem(
            &read("ca.pem"),
            &read(&format!("node-{n}.pem")),
            &read(&format!("node-{n}.key")),
        )
        .unwrap()
    };
    let [(_e1, mut i1), (e3, _i3)] = pair(id(1), 1, id(3), 3);
    assert!(delivered(&e3, 1, &mut i1, Duration::from_secs(5)), "cert from the reloaded CA chains");
    let [(_e1, mut i1), (e2, _i2)] = pair(id(1), 1, id(2), 2);
    assert!(delivered(&e2, 1, &mut i1, Duration::from_secs(5)));
    let _ = std::fs::remove_dir_all(&dir);
}
