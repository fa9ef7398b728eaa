//! The kv server's client sessions on the node channel (`FLOTILLA.LOCAL`), as a
//! forwarding node uses them: `S <group>` opens a session at the group's leader, and a
//! write sent again with the same (session, sequence) is answered with its first result
//! and not applied again; a write in a session the group does not know is refused as
//! such (not applied), and the client port's writes run in the node's own session.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::Cluster;
use flotilla_kv::acl::Secret;
use flotilla_kv::node::Op;
use flotilla_kv::node_channel::{connect, NodeTls};
use flotilla_kv::resp::Value;
use flotilla_kv::sessions::Tag;
use flotilla_kv::sm::{shard_group, shard_of, WriteCmd};

#[test]
fn a_forwarded_write_sent_again_in_its_session_is_applied_once() {
    let mut c = Cluster::new(None, "shards = 1");
    c.start(1, true);
    c.wait_writable(1, "w");
    // A node channel connection as node 1 itself would forward (its own certificate).
    let pair = c.ca.issue_node(1).unwrap();
    let tls = NodeTls::new(&c.ca.pem().cert_pem, &pair.cert_pem, &Secret::new(pair.key_pem)).unwrap();
    let mut ch = connect(&tls, &c.nodes[&1].peer, 1, Duration::from_secs(5)).unwrap();
    ch.set_timeout(Duration::from_secs(20)).unwrap();
    let key = b"ctr".to_vec();
    let group = shard_group(shard_of(&key, 1));
    let mut call = |op: Op| ch.call(&op.to_args()).unwrap();
    let Value::Int(id) = call(Op::OpenSession { group }) else { panic!("no session id") };
    let id = u64::try_from(id).unwrap();
    let incr = |tag: Tag| Op::Write {
        group,
        cmd: WriteCmd::Incr { key: key.clone(), by: 1 }.encode(),
        tag: Some(tag),
    };
    let t1 = Tag { session: id, seq: 1, floor: 1 };
    assert_eq!(call(incr(t1)), Value::Int(1));
    assert_eq!(call(incr(t1)), Value::Int(1), "sent again: the first result, not applied again");
    let t2 = Tag { session: id, seq: 2, floor: 1 };
    assert_eq!(call(incr(t2)), Value::Int(2));
    assert_eq!(call(incr(t1)), Value::Int(1), "an older one still unanswered: its first result");
    assert_eq!(call(incr(t2)), Value::Int(2));
    // A session the group never opened: refused, final, and nothing applied.
    let unknown = Tag { session: id + 1_000_000, seq: 1, floor: 1 };
    match call(incr(unknown)) {
        Value::Error(e) => assert!(e.starts_with("FLOTILLA.ERR SESSIONREFUSED"), "{e}"),
        v => panic!("a write in an unknown session must be refused, got {v:?}"),
    }
    // The client port's writes run in the node's own session: counted once each.
    let mut con = c.redis(1);
    let v: i64 = redis::cmd("INCR").arg("ctr").query(&mut con).unwrap();
    assert_eq!(v, 3, "two INCRs applied before this one, whatever was sent again");
    let v: i64 = redis::cmd("INCR").arg("ctr").query(&mut con).unwrap();
    assert_eq!(v, 4);
}
