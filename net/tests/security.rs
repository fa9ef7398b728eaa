//! Mutual TLS admission: only certificates of a trusted cluster CA (several during a
//! rotation), still valid, with the right key usage, and only for the node id they name;
//! certificates reload without a restart. Each refusal test has a positive twin so it
//! cannot pass vacuously.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use common::raw::{custom_node_cert, is_tls_failure, RawClient};
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
    // A later node from the reloaded CA, valid for two days.
    let out = Command::new(bin).args(["node", dir.to_str().unwrap(), "3", "--days", "2"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!Command::new(bin)
        .args(["node", dir.to_str().unwrap(), "4", "--days", "0"])
        .status()
        .unwrap()
        .success());
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
    // Finite validity: one year by default, `--days` otherwise; the stats show it.
    let in_days = |n: u64, days: u64| {
        let left = id(n).not_after().unwrap().duration_since(SystemTime::now()).unwrap();
        let want = Duration::from_secs(days * 86_400);
        left <= want && left + Duration::from_secs(600) > want
    };
    assert!(in_days(1, 365) && in_days(3, 2));
    let [(e1, mut i1), (e3, _i3)] = pair(id(1), 1, id(3), 3);
    assert_eq!(e3.stats().cert_not_after, id(3).not_after());
    assert!(delivered(&e3, 1, &mut i1, Duration::from_secs(5)), "cert from the reloaded CA chains");
    assert_eq!(e1.stats().peer_cert_not_after_min, id(3).not_after(), "{:?}", e1.stats());
    drop((e1, e3));
    let [(_e1, mut i1), (e2, _i2)] = pair(id(1), 1, id(2), 2);
    assert!(delivered(&e2, 1, &mut i1, Duration::from_secs(5)));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Dials node 1 with the raw client; the reason the connection closed (it must close
/// within the deadline).
fn refused_in_handshake(client: &RawClient, e1: &flotilla_net::Endpoint) -> quinn::ConnectionError {
    let addr = e1.local_addr().unwrap();
    match client.connect(addr, 1, Duration::from_secs(3)) {
        Err(Some(e)) => e,
        Err(None) => panic!("no answer to the dial"),
        Ok(conn) => {
            // TLS 1.3: the dialer's side completes before the acceptor checked its
            // certificate; the refusal arrives as the close.
            let _ = client.hello(&conn, flotilla_net::frame::Hello { from: 2, incarnation: 1, to: 1 });
            client.closed(&conn, Duration::from_secs(3)).expect("connection not closed")
        }
    }
}

#[test]
fn dialer_without_a_certificate_is_refused_in_the_handshake() {
    let ca = ClusterCa::generate().unwrap();
    let (e1, mut i1) =
        start(test_config(1, "127.0.0.1:0".parse().unwrap()).validate().unwrap(), &identity(&ca, 1));
    // Positive twin: the same raw client with node 2's certificate is admitted (its hello
    // is acknowledged: the peer comes up).
    let n2 = ca.issue_node(2).unwrap();
    let good = RawClient::new(&ca.pem().cert_pem, Some((&n2.cert_pem, &n2.key_pem)));
    let conn = good.connect(e1.local_addr().unwrap(), 1, Duration::from_secs(3)).unwrap();
    let _streams = good.hello(&conn, flotilla_net::frame::Hello { from: 2, incarnation: 1, to: 1 }).unwrap();
    assert!(
        wait_for(&mut i1, Duration::from_secs(3), |e| matches!(e, Event::PeerUp { node: 2, .. })).is_some()
    );

    let bare = RawClient::new(&ca.pem().cert_pem, None);
    let why = refused_in_handshake(&bare, &e1);
    assert!(is_tls_failure(&why), "refused after the handshake, not in it: {why:?}");
    let deadline = Instant::now() + Duration::from_secs(2);
    while e1.stats().refused == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(e1.stats().refused >= 1, "{:?}", e1.stats());
    assert_eq!(e1.stats().connections, 1, "only the positive twin");
}

#[test]
fn expired_certificate_is_refused() {
    let ca = ClusterCa::generate().unwrap();
    // Issued for one second: expired once that second has passed (whole-second clocks).
    let short = ca.issue_node_valid_for(2, Duration::from_secs(1)).unwrap();
    let expired = NodeIdentity::from_pem(&ca.pem().cert_pem, &short.cert_pem, &short.key_pem).unwrap();
    // Bounded: a certificate that did not expire (as without a finite validity) is
    // tried after at most 3 s, and must then fail the test.
    let until = (expired.not_after().unwrap() + Duration::from_millis(1100))
        .min(SystemTime::now() + Duration::from_secs(3));
    // Positive twin, meanwhile: a certificate with a year left connects.
    let [(e1, mut i1), (e2, _i2)] = pair(identity(&ca, 1), 1, identity(&ca, 2), 2);
    assert!(delivered(&e2, 1, &mut i1, Duration::from_secs(5)));
    drop((e1, e2));
    while SystemTime::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    let [(e1, mut i1), (e2, mut i2)] = pair(identity(&ca, 1), 1, expired, 2);
    e2.send(1, 5, Bytes::from_static(b"still me")).unwrap();
    let ev = wait_for(&mut i2, Duration::from_secs(5), |e| matches!(e, Event::Dropped { .. }));
    assert_eq!(ev, Some(Event::Dropped { to: 1, tags: vec![5], reason: DropReason::Unreachable }));
    assert!(no_peer_up(&mut i1, Duration::from_millis(300)));
    assert!(e1.stats().refused >= 1, "{:?}", e1.stats());
    assert_eq!(e1.stats().connections, 0);
}

#[test]
fn certificates_with_the_wrong_key_usage_are_refused_both_ways() {
    let ca = ClusterCa::generate().unwrap();
    let addr = |e: &flotilla_net::Endpoint| e.local_addr().unwrap();
    let (e1, mut i1) =
        start(test_config(1, "127.0.0.1:0".parse().unwrap()).validate().unwrap(), &identity(&ca, 1));
    // Positive twin: rcgen-built like the bad ones below, with both usages: admitted.
    let (c, k) = custom_node_cert(&ca, 2, |_| {});
    let ok = RawClient::new(&ca.pem().cert_pem, Some((&c, &k)));
    let conn = ok.connect(addr(&e1), 1, Duration::from_secs(3)).unwrap();
    let _s = ok.hello(&conn, flotilla_net::frame::Hello { from: 2, incarnation: 1, to: 1 }).unwrap();
    assert!(
        wait_for(&mut i1, Duration::from_secs(3), |e| matches!(e, Event::PeerUp { node: 2, .. })).is_some()
    );

    let no_eku = custom_node_cert(&ca, 3, |p| p.extended_key_usages.clear());
    let server_only = custom_node_cert(&ca, 4, |p| {
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth]
    });
    let no_digital_signature =
        custom_node_cert(&ca, 5, |p| p.key_usages = vec![rcgen::KeyUsagePurpose::KeyEncipherment]);
    let ca_as_leaf = (ca.pem().cert_pem.clone(), ca.pem().key_pem.clone());
    for (what, (c, k)) in [
        ("no extended key usage", no_eku),
        ("serverAuth only", server_only),
        ("no digitalSignature", no_digital_signature),
        ("the CA certificate", ca_as_leaf),
    ] {
        let before = e1.stats();
        let bad = RawClient::new(&ca.pem().cert_pem, Some((&c, &k)));
        let why = refused_in_handshake(&bad, &e1);
        assert!(is_tls_failure(&why), "{what}: refused after the handshake, not in it: {why:?}");
        // The acceptor counts the refusal once its side of the handshake has failed.
        let deadline = Instant::now() + Duration::from_secs(2);
        while e1.stats().refused == before.refused && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(e1.stats().refused > before.refused, "{what}: {:?}", e1.stats());
    }
    assert_eq!(e1.stats().connections, 1, "only the positive twin");
    assert!(e1.stats().policy_refused >= 2, "no EKU and no digitalSignature: {:?}", e1.stats());

    // The other way: node 1 dials a node whose certificate has no extended key usage.
    let (c, k) = custom_node_cert(&ca, 6, |p| p.extended_key_usages.clear());
    let bad6 = NodeIdentity::from_pem(&ca.pem().cert_pem, &c, &k).unwrap();
    let (e6, mut i6) = start(test_config(6, "127.0.0.1:0".parse().unwrap()).validate().unwrap(), &bad6);
    e1.set_peer_addr(6, addr(&e6));
    e1.send(6, 9, Bytes::from_static(b"are you a server?")).unwrap();
    let ev = wait_for(&mut i1, Duration::from_secs(5), |e| matches!(e, Event::Dropped { .. }));
    assert_eq!(ev, Some(Event::Dropped { to: 6, tags: vec![9], reason: DropReason::Unreachable }));
    assert!(no_peer_up(&mut i6, Duration::from_millis(300)));
}

#[test]
fn two_trusted_cas_admit_nodes_of_either_for_a_rotation() {
    let old = ClusterCa::generate().unwrap();
    let new = ClusterCa::generate().unwrap();
    let bundle = format!("{}{}", old.pem().cert_pem, new.pem().cert_pem);
    let node = |ca: &ClusterCa, trust: &str, id: u64| {
        let n = ca.issue_node(id).unwrap();
        NodeIdentity::from_pem(trust, &n.cert_pem, &n.key_pem).unwrap()
    };
    // Node 1 (old CA) and node 2 (new CA) both trust the bundle: both directions work.
    let [(e1, mut i1), (e2, mut i2)] = pair(node(&old, &bundle, 1), 1, node(&new, &bundle, 2), 2);
    assert!(delivered(&e2, 1, &mut i1, Duration::from_secs(5)), "new-CA node to old-CA node");
    assert!(delivered(&e1, 2, &mut i2, Duration::from_secs(5)), "old-CA node to new-CA node");
    drop((e1, e2));
    // Negative twin: node 2 trusting only the new CA refuses node 1's old-CA certificate.
    let [(e1, mut i1), (_e2, mut i2)] =
        pair(node(&old, &bundle, 1), 1, node(&new, &new.pem().cert_pem, 2), 2);
    e1.send(2, 3, Bytes::from_static(b"old")).unwrap();
    let ev = wait_for(&mut i1, Duration::from_secs(5), |e| matches!(e, Event::Dropped { .. }));
    assert_eq!(ev, Some(Event::Dropped { to: 2, tags: vec![3], reason: DropReason::Unreachable }));
    assert!(no_peer_up(&mut i2, Duration::from_millis(300)));
}

#[test]
fn reloaded_certificates_serve_new_connections_without_a_restart() {
    let dir: PathBuf = std::env::temp_dir().join(format!("flotilla-reload-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let old = ClusterCa::generate().unwrap();
    let new = ClusterCa::generate().unwrap();
    let write = |f: &str, s: &str| std::fs::write(dir.join(f), s).unwrap();
    let n1 = old.issue_node(1).unwrap();
    write("ca.pem", &old.pem().cert_pem);
    write("node.pem", &n1.cert_pem);
    write("node.key", &n1.key_pem);
    let id1 =
        NodeIdentity::from_files(&dir.join("ca.pem"), &dir.join("node.pem"), &dir.join("node.key")).unwrap();
    let n2 = new.issue_node(2).unwrap();
    let id2 = NodeIdentity::from_pem(&new.pem().cert_pem, &n2.cert_pem, &n2.key_pem).unwrap();
    // Node 2 is of the new CA only: before the reload, node 1 and node 2 cannot connect.
    let [(e1, mut i1), (e2, mut i2)] = pair(id1, 1, id2, 2);
    e2.send(1, 1, Bytes::from_static(b"before")).unwrap();
    let ev = wait_for(&mut i2, Duration::from_secs(5), |e| matches!(e, Event::Dropped { .. }));
    assert_eq!(ev, Some(Event::Dropped { to: 1, tags: vec![1], reason: DropReason::Unreachable }));
    assert!(no_peer_up(&mut i1, Duration::from_millis(200)));

    // The operator installs node 1's new-CA certificate (30 days) and the new CA, and
    // asks for a reload.
    let n1b = new.issue_node_valid_for(1, Duration::from_secs(30 * 86_400)).unwrap();
    write("ca.pem", &new.pem().cert_pem);
    write("node.pem", &n1b.cert_pem);
    write("node.key", &n1b.key_pem);
    let before = e1.stats().cert_not_after.unwrap();
    e1.reload_certs().unwrap();
    let after = e1.stats().cert_not_after.unwrap();
    assert!(after < before, "the 30-day certificate is in use: {after:?} vs {before:?}");
    assert!(delivered(&e2, 1, &mut i1, Duration::from_secs(5)), "node 2 connects after the reload");
    assert_eq!(e2.stats().peer_cert_not_after_min, Some(after), "node 2 saw the new certificate");
    // A broken file leaves the working certificates in place.
    write("node.key", "not a key");
    assert!(e1.reload_certs().is_err());
    assert_eq!(e1.stats().cert_not_after, Some(after));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn issued_certificates_expire_after_their_validity() {
    use flotilla_net::{CertError, DEFAULT_NODE_VALIDITY, MAX_VALIDITY};
    let ca = ClusterCa::generate().unwrap();
    let left = |p: &flotilla_net::PemPair| {
        let id = NodeIdentity::from_pem(&ca.pem().cert_pem, &p.cert_pem, &p.key_pem).unwrap();
        id.not_after().unwrap().duration_since(SystemTime::now()).unwrap()
    };
    let year = left(&ca.issue_node(1).unwrap());
    assert!(year <= DEFAULT_NODE_VALIDITY && year > DEFAULT_NODE_VALIDITY - Duration::from_secs(60));
    let day = left(&ca.issue_node_valid_for(2, Duration::from_secs(86_400)).unwrap());
    assert!(day <= Duration::from_secs(86_400) && day > Duration::from_secs(86_000));
    assert!(matches!(ca.issue_node_valid_for(3, Duration::ZERO), Err(CertError::Validity(_))));
    assert!(matches!(ca.issue_node_valid_for(3, MAX_VALIDITY * 2), Err(CertError::Validity(_))));
}
