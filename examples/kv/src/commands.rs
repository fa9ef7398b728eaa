//! The commands: RESP requests (already parsed into arguments) to replies, with AUTH, the
//! Redis data commands, INFO, and the `FLOTILLA.*` admin commands.
//!
//! Owns command syntax and how multi-key commands split across shards: MSET, MGET, DEL and
//! EXISTS run one operation per shard involved, so MSET is atomic per shard only (a failure
//! can leave some shards written; the reply then says which error occurred). Pipelined
//! runs of single-key writes (or reads) start all their proposals (or read barriers) before
//! waiting for the first, in order; a write run never overlaps a read run, so each reply
//! reflects every earlier command of the connection. Never touches sockets.
//!
//! Who may run what is [`crate::acl`]'s: with passwords set, the data user (`AUTH
//! <password>`) runs data commands, the admin user (`AUTH <admin_user> <password>`) also
//! the admin commands below (the data user gets `-NOPERM`), and `FLOTILLA.LOCAL` runs only
//! for another node on the node channel ([`crate::node_channel`]), never on the client port.
//!
//! Admin commands:
//! - `FLOTILLA.STATUS`: this node's status as JSON ([`crate::node::NodeStatus`]).
//! - `FLOTILLA.REGISTER <id> <peer addr> <client addr>`: adds a node to the directory.
//! - `FLOTILLA.UNREGISTER <id>`: removes a node from the directory (once it left every
//!   group; `remove-servers` does this last).
//! - `FLOTILLA.MEMBER <addlearner|promote|addvoter|remove> <group> <node>`: a membership
//!   change of one group, run at its leader.
//! - `FLOTILLA.TRANSFER <group> <node>`: moves the group's leadership to the node and
//!   waits until it took over.
//! - `FLOTILLA.RELOADCERTS`: re-reads this node's certificate files for new connections
//!   of the QUIC transport and the node channel ([`crate::trust`]); on an error the node
//!   keeps its certificates and the reply says why.
//! - `FLOTILLA.BACKUP`, `FLOTILLA.BACKUPREAD`, `FLOTILLA.RESTOREPART`, `FLOTILLA.RESTORE`:
//!   a shard's snapshot out of and into a cluster ([`crate::backup`]).
//! - `FLOTILLA.LOCAL ...`: internal, a forwarded operation (see [`crate::node`]); node
//!   channel only.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use flotilla_engine::api::{Proposal, ReadBarrier};

use crate::acl::{class, Acl, User};
use crate::node::{indeterminate, Member, Node, Op, Outcome, ReadQ};
use crate::outcome::{is_indeterminate, is_session_refused};
use crate::resp::{Proto, Value};
use crate::sm::{shard_group, MetaCmd, NodeInfo, WriteCmd, META_GROUP};

/// A connection's state.
#[derive(Debug, Default, Clone)]
pub struct Session {
    /// Who it authenticated as (a client port session), or the peer node (node channel).
    pub user: User,
    /// QUIT was received: close after the replies.
    pub close: bool,
    /// The protocol its replies are written in (RESP2 until `HELLO 3`).
    pub proto: Proto,
    /// Its client id (`CLIENT ID`, `HELLO`'s `id`): unique in this process.
    pub id: u64,
    /// Its name (`CLIENT SETNAME`, `HELLO ... SETNAME`).
    pub name: Option<Vec<u8>>,
    /// Its MULTI queue and watched keys ([`crate::multi`]).
    pub tx: Box<crate::multi::TxState>,
    /// `READONLY` was sent (cluster mode): its reads may be served by a follower replica
    /// here, still linearizable (ReadIndex).
    pub readonly: bool,
}

impl Session {
    /// A new client port session (already the admin user when no password is set).
    pub fn client(acl: &Acl) -> Session {
        Session {
            user: acl.initial(),
            close: false,
            proto: Proto::Resp2,
            id: crate::hello::next_client_id(),
            name: None,
            tx: Default::default(),
            readonly: false,
        }
    }

    /// Whether it may run data commands (AUTH succeeded, or no password is set).
    pub fn authed(&self) -> bool {
        matches!(self.user, User::Data | User::Admin)
    }
}

fn upper(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_ascii_uppercase()
}

/// Bytes of a command name kept on the stack by [`upper_name`] (Redis's longest command
/// name is 20 bytes).
const NAME_INLINE: usize = 24;

/// A command name in upper case, on the stack unless it is long or not ASCII: every
/// request's name is looked at on the fast path ([`single_op`]), which this spares an
/// allocation.
struct UpperName {
    buf: [u8; NAME_INLINE],
    len: usize,
    long: Option<String>,
}

impl std::ops::Deref for UpperName {
    type Target = str;

    fn deref(&self) -> &str {
        match &self.long {
            Some(s) => s,
            // ASCII by construction, so never the empty fallback.
            None => std::str::from_utf8(&self.buf[..self.len]).unwrap_or(""),
        }
    }
}

fn upper_name(b: &[u8]) -> UpperName {
    let mut buf = [0u8; NAME_INLINE];
    if b.len() <= NAME_INLINE && b.is_ascii() {
        buf[..b.len()].copy_from_slice(b);
        buf[..b.len()].make_ascii_uppercase();
        UpperName { buf, len: b.len(), long: None }
    } else {
        UpperName { buf, len: 0, long: Some(upper(b)) }
    }
}

fn arity(name: &str) -> Value {
    Value::err(format!("ERR wrong number of arguments for '{}' command", name.to_ascii_lowercase()))
}

fn int_arg(b: &[u8]) -> Result<i64, Value> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Value::err("ERR value is not an integer or out of range"))
}

/// The one operation of a single-key command, if it is one (`Err` is a syntax error).
fn single_op(node: &Node, args: &[Vec<u8>]) -> Option<Result<Op, Value>> {
    let upper = upper_name(args.first()?);
    let name: &str = &upper;
    let write = |key: &[u8], cmd: WriteCmd| Op::write(node.group_of(key), cmd.encode());
    if let Some(op) = crate::keycmd::single_op(node, name, args) {
        return Some(op);
    }
    Some(match (name, &args[1..]) {
        ("GET", [k]) => Ok(Op::Read { group: node.group_of(k), q: ReadQ::Get(k.clone()) }),
        ("TYPE", [k]) => Ok(Op::Read { group: node.group_of(k), q: ReadQ::Type(k.clone()) }),
        ("STRLEN", [k]) => Ok(Op::Read { group: node.group_of(k), q: ReadQ::Strlen(k.clone()) }),
        ("APPEND", [k, v]) => Ok(write(k, WriteCmd::Append { key: k.clone(), val: v.clone() })),
        ("GETSET", [k, v]) => Ok(write(k, WriteCmd::GetSet { key: k.clone(), val: v.clone() })),
        ("GETDEL", [k]) => Ok(write(k, WriteCmd::GetDel(k.clone()))),
        ("SETNX", [k, v]) => Ok(write(k, WriteCmd::SetNx { key: k.clone(), val: v.clone() })),
        ("INCR", [k]) => Ok(write(k, WriteCmd::Incr { key: k.clone(), by: 1 })),
        ("DECR", [k]) => Ok(write(k, WriteCmd::Incr { key: k.clone(), by: -1 })),
        ("INCRBY", [k, n]) => int_arg(n).map(|by| write(k, WriteCmd::Incr { key: k.clone(), by })),
        ("DECRBY", [k, n]) => int_arg(n)
            .and_then(|n| n.checked_neg().ok_or_else(|| Value::err("ERR decrement would overflow")))
            .map(|by| write(k, WriteCmd::Incr { key: k.clone(), by })),
        _ => return None,
    })
}

enum Started {
    /// A proposal started here, and when.
    Write(Proposal, std::time::Instant),
    Read(ReadBarrier),
    /// Sent to another node: the index of its reply among that node's.
    Forward(u64, usize),
}

/// The operation of a command the pipelined path can start: a single-key read or write
/// (for an authenticated client), or a forwarded one (`FLOTILLA.LOCAL`, from another node
/// on the node channel; `true`: run here only). Anything else runs through [`command`],
/// which checks permissions.
fn fast_op(node: &Node, args: &[Vec<u8>], s: &Session) -> Option<(Op, bool)> {
    // Inside MULTI every command is queued by `command`, never started.
    if s.tx.open() {
        return None;
    }
    if matches!(s.user, User::Data | User::Admin) {
        if let Some(Ok(op)) = single_op(node, args) {
            // Cluster mode: only what this node serves now; the rest gets its redirect on
            // the slow path.
            let (group, read) = match &op {
                Op::Write { group, .. } => (*group, false),
                Op::Read { group, .. } => (*group, true),
                _ => return None,
            };
            if node.config().cluster_mode && !crate::redis_cluster::served_here(node, group, read, s) {
                return None;
            }
            return Some((op, false));
        }
        return None;
    }
    if matches!(s.user, User::Node(_)) && upper(args.first()?) == "FLOTILLA.LOCAL" {
        return match Op::from_args(&args[1..])? {
            op @ (Op::Write { .. } | Op::Read { .. }) => Some((op, true)),
            _ => None,
        };
    }
    None
}

/// Runs a pipelined batch of commands in order; one reply per command.
pub fn run_batch(node: &Node, cmds: &[Vec<Vec<u8>>], s: &mut Session) -> Vec<Value> {
    let mut out = Vec::with_capacity(cmds.len());
    let mut routes: HashMap<u64, Option<u64>> = HashMap::new();
    let mut i = 0;
    while i < cmds.len() {
        let mut started: Vec<(Op, bool, Started)> = Vec::new();
        let mut forwards: BTreeMap<u64, Vec<Op>> = BTreeMap::new();
        let mut reads = None;
        let mut j = i;
        // Commands inside MULTI are queued by `command` (`fast_op` refuses them).
        while j < cmds.len() && !s.close {
            let Some((mut op, local)) = fast_op(node, &cmds[j], s) else { break };
            let is_read = matches!(op, Op::Read { .. });
            if reads.is_some_and(|r| r != is_read) {
                break;
            }
            // A client's write runs in this node's session of its group; the first write
            // of a group opens it on the slow path.
            if let Op::Write { group, tag: tag @ None, .. } = &mut op {
                if !local {
                    match node.session_tag_now(*group) {
                        Some(t) => *tag = Some(t),
                        None => break,
                    }
                }
            }
            let st = match &op {
                Op::Write { group, cmd, tag } => {
                    let route = if local {
                        Some(node.id())
                    } else {
                        *routes.entry(*group).or_insert_with(|| node.route(*group))
                    };
                    match route {
                        Some(n) if n != node.id() => {
                            let f = forwards.entry(n).or_default();
                            f.push(op.clone());
                            Started::Forward(n, f.len() - 1)
                        }
                        _ => match node.propose_tagged(*group, cmd.clone(), *tag) {
                            Ok(p) => Started::Write(p, std::time::Instant::now()),
                            Err(_) => {
                                // Not started: the slow path runs the command afresh.
                                let _ = node.answered(*group, *tag, Value::ok());
                                break;
                            }
                        },
                    }
                }
                Op::Read { group, .. } => match node.engine().read_index(*group) {
                    Ok(b) => Started::Read(b),
                    Err(_) => break,
                },
                _ => break,
            };
            reads = Some(is_read);
            started.push((op, local, st));
            j += 1;
        }
        if started.is_empty() {
            out.push(command(node, &cmds[i], s));
            i += 1;
            continue;
        }
        let mut replies: HashMap<u64, Vec<Outcome>> = HashMap::new();
        for (to, ops) in &forwards {
            replies.insert(*to, node.forward_batch(*to, ops));
        }
        for (op, local, st) in started {
            let v = match st {
                Started::Forward(to, k) => match replies.get_mut(&to).and_then(|r| r.get_mut(k)) {
                    Some(o) => match std::mem::replace(o, Outcome::Redirect(None)) {
                        // A tagged write's unknown outcome or session refusal: the slow
                        // path goes on from it, with the same tag.
                        o @ Outcome::Fail(Value::Error(_)) | o @ Outcome::Done(Value::Error(_))
                            if needs_resume(&op, &o) =>
                        {
                            node.resume(op, o)
                        }
                        Outcome::Done(v) | Outcome::Fail(v) => answered(node, &op, v),
                        // Refused there before any append: run it again the slow way.
                        _ => node.exec(op),
                    },
                    // Every op sent has an outcome; an op never sent may run.
                    None => node.exec(op),
                },
                st => finish(node, op, local, st),
            };
            out.push(v);
        }
        i = j;
    }
    out
}

/// Whether `o`, an attempt at `op`, leaves a tagged write for the slow path to go on
/// with: an unknown outcome (retried with the same tag) or a session refusal.
fn needs_resume(op: &Op, o: &Outcome) -> bool {
    let (Some(_), Outcome::Done(Value::Error(e)) | Outcome::Fail(Value::Error(e))) = (op.tag(), o) else {
        return false;
    };
    is_indeterminate(e) || is_session_refused(e)
}

/// The final reply `v` of `op`, whose session (if tagged) may forget its answer.
fn answered(node: &Node, op: &Op, v: Value) -> Value {
    match op {
        Op::Write { group, tag, .. } => node.answered(*group, *tag, v),
        _ => v,
    }
}

fn finish(node: &Node, op: Op, local: bool, st: Started) -> Value {
    let budget = node.config().retry_budget + Duration::from_secs(3);
    match (st, &op) {
        (Started::Write(p, started), _) => {
            let r = p.wait_timeout(budget);
            node.kv_metrics().observe_propose(started.elapsed());
            let o = match r {
                Ok(r) => Node::proposal_outcome(r),
                Err(_) => Outcome::Fail(indeterminate("not applied in time")),
            };
            finish_write(node, op, local, o)
        }
        (Started::Read(b), Op::Read { .. }) => {
            let confirmed = matches!(b.wait_timeout(budget), Ok(Ok(_)));
            finish_read(node, op, local, confirmed)
        }
        _ => again(node, op, local),
    }
}

/// Runs `op` afresh: on the slow path, or for an op forwarded here, on this node only.
fn again(node: &Node, op: Op, local: bool) -> Value {
    if local {
        node.exec_local(&op).to_value()
    } else {
        node.exec(op)
    }
}

/// The reply to a started write whose attempt had outcome `o`: final, or continued on the
/// slow path (which may block: see [`write_is_final`]).
pub(crate) fn finish_write(node: &Node, op: Op, local: bool, o: Outcome) -> Value {
    match o {
        // Known never applied (refused before the append, or dropped): run it again the
        // slow way.
        o if o.retryable() => again(node, op, local),
        // This node's own tagged write: learn its outcome with the same tag.
        o if !local && needs_resume(&op, &o) => node.resume(op, o),
        // A forwarded op's answer is read back by the forwarding node (see
        // `crate::outcome`).
        o if local => o.to_value(),
        Outcome::Done(v) | Outcome::Fail(v) => answered(node, &op, v),
        o => o.to_value(),
    }
}

/// Whether [`finish_write`] answers a client's write with outcome `o` at once, without
/// running anything more (so without blocking).
pub(crate) fn write_is_final(op: &Op, o: &Outcome) -> bool {
    matches!(o, Outcome::Done(_) | Outcome::Fail(_)) && !needs_resume(op, o)
}

/// The reply to a started read: its data once the barrier was `confirmed`, else the read
/// again on the slow path.
pub(crate) fn finish_read(node: &Node, op: Op, local: bool, confirmed: bool) -> Value {
    match (&op, confirmed) {
        (Op::Read { group, q }, true) if local => Outcome::Done(node.read_local(*group, q)).to_value(),
        (Op::Read { group, q }, true) => node.read_local(*group, q),
        _ => again(node, op, local),
    }
}

/// The operation of a client's command that can start at once on this node without a
/// thread waiting for it: a single-key write to a shard this node leads (untagged: the
/// caller gives it a tag in the node's open client session of the shard, one for a batch
/// of writes), or a single-key read of a shard with a replica here that may serve it.
/// `None` for anything else (the executor runs it).
pub(crate) fn plan_here(node: &Node, args: &[Vec<u8>], s: &Session) -> Option<Op> {
    let (op, _) = fast_op(node, args, s).filter(|(_, local)| !local)?;
    match op {
        op @ Op::Write { group, tag: None, .. } if node.route(group) == Some(node.id()) => Some(op),
        op @ Op::Read { .. } => Some(op),
        _ => None,
    }
}

/// Runs per-shard operations (in parallel when there are several); replies in order.
fn exec_all(node: &Node, ops: Vec<Op>) -> Vec<Value> {
    if ops.len() <= 1 {
        return ops.into_iter().map(|op| node.exec(op)).collect();
    }
    std::thread::scope(|sc| {
        let hs: Vec<_> = ops.into_iter().map(|op| sc.spawn(move || node.exec(op))).collect();
        hs.into_iter().map(|h| h.join().unwrap_or_else(|_| Value::err("ERR internal error"))).collect()
    })
}

/// Keys grouped by shard, keeping each key's position.
fn by_group(node: &Node, keys: &[Vec<u8>]) -> BTreeMap<u64, Vec<(usize, Vec<u8>)>> {
    let mut m: BTreeMap<u64, Vec<(usize, Vec<u8>)>> = BTreeMap::new();
    for (i, k) in keys.iter().enumerate() {
        m.entry(node.group_of(k)).or_default().push((i, k.clone()));
    }
    m
}

/// `SCAN cursor [MATCH pattern] [COUNT n] [TYPE type]` across the shards, one shard per
/// step: the cursor's top 16 bits name the shard, the rest the next position in the
/// shard's SCAN order ([`crate::sm::scan_step`]); 0 starts and ends a scan, as in Redis.
/// A key present for the whole scan is returned exactly once.
fn scan(node: &Node, cursor: &[u8], opts: &[Vec<u8>]) -> Value {
    let Some(cursor) = std::str::from_utf8(cursor).ok().and_then(|c| c.parse::<u64>().ok()) else {
        return Value::err("ERR invalid cursor");
    };
    let (mut pattern, mut count, mut ty) = (None, 10u64, None);
    let mut i = 0;
    while i < opts.len() {
        let Some(arg) = opts.get(i + 1) else { return Value::err("ERR syntax error") };
        match upper(&opts[i]).as_str() {
            "MATCH" => pattern = Some(arg.clone()),
            "COUNT" => match int_arg(arg) {
                Ok(n) if n >= 1 => count = n as u64,
                Ok(_) => return Value::err("ERR syntax error"),
                Err(e) => return e,
            },
            "TYPE" => ty = Some(String::from_utf8_lossy(arg).to_ascii_lowercase()),
            _ => return Value::err("ERR syntax error"),
        }
        i += 2;
    }
    // Every shard, in cluster mode too: a cluster client scans each node it takes for a
    // master, and which nodes those are depends on the client (a node leading one shard is
    // a replica of others), so each node's scan covers every key. Keys then come once per
    // node scanned, which Redis's SCAN contract allows; a key missed would not be.
    let shards = u64::from(crate::shard_split::shard_count(node));
    let (shard, from) = (cursor >> crate::sm::SCAN_SHARD_SHIFT, cursor & crate::sm::SCAN_HASH_MAX);
    if shard >= shards {
        return Value::Array(Some(vec![Value::bulk("0"), Value::Array(Some(vec![]))]));
    }
    let step = node.exec(Op::Read { group: shard_group(shard as u32), q: ReadQ::Scan { from, count } });
    let Value::Array(Some(parts)) = step else { return step };
    let [Value::Int(next), Value::Array(Some(keys)), Value::Array(Some(types))] = parts.as_slice() else {
        return Value::err("ERR internal error: bad SCAN step");
    };
    let next = match *next {
        n if n >= 0 => (shard << crate::sm::SCAN_SHARD_SHIFT) | n as u64,
        _ if shard + 1 < shards => (shard + 1) << crate::sm::SCAN_SHARD_SHIFT,
        _ => 0,
    };
    let keep = |k: &Value, t: &Value| {
        let Value::Bulk(Some(k)) = k else { return false };
        let typed = ty.as_deref().map_or(true, |ty| matches!(t, Value::Bulk(Some(t)) if t == ty.as_bytes()));
        let matched = pattern.as_ref().map_or(true, |p| crate::glob::key_matches(p, k));
        typed && matched
    };
    let keys: Vec<Value> =
        keys.iter().zip(types).filter(|(k, t)| keep(k, t)).map(|(k, _)| k.clone()).collect();
    Value::Array(Some(vec![Value::bulk(next.to_string()), Value::Array(Some(keys))]))
}

/// Runs `op(group)` on every shard at once (DBSIZE, KEYS, FLUSHDB); one reply per shard.
fn every_shard(node: &Node, op: impl Fn(u64) -> Op) -> Vec<Value> {
    exec_all(node, (0..crate::shard_split::shard_count(node)).map(|s| op(shard_group(s))).collect())
}

fn first_error(vs: &[Value]) -> Option<Value> {
    vs.iter().find(|v| matches!(v, Value::Error(_))).cloned()
}

fn sum_ints(vs: Vec<Value>) -> Value {
    if let Some(e) = first_error(&vs) {
        return e;
    }
    Value::Int(vs.iter().map(|v| if let Value::Int(n) = v { *n } else { 0 }).sum())
}

/// Runs one command.
pub fn command(node: &Node, args: &[Vec<u8>], s: &mut Session) -> Value {
    let Some(first) = args.first() else { return Value::err("ERR empty command") };
    let name = upper(first);
    let rest = &args[1..];
    // NOAUTH before authentication, NOPERM for a command the user may not run, and
    // internal commands only from another node on the node channel (see `crate::acl`).
    if let Some(refused) = node.acl().check(s.user, class(&name), &name) {
        return refused;
    }
    if let Some(v) = crate::multi::intercept(node, &name, args, s) {
        return v;
    }
    if name == "AUTH" {
        return match node.acl().auth(rest) {
            Ok(u) => {
                s.user = u;
                Value::ok()
            }
            Err(e) => e,
        };
    }
    if name == "HELLO" {
        let mode = if node.config().cluster_mode { "cluster" } else { "standalone" };
        return crate::hello::hello(node.acl(), rest, s, mode);
    }
    if name == "QUIT" {
        s.close = true;
        return Value::ok();
    }
    // Cluster mode: a keyed command runs only where its shard is served (`-MOVED`
    // otherwise), and only on keys of one slot (`-CROSSSLOT`).
    if node.config().cluster_mode && !matches!(s.user, User::Node(_)) {
        let read = crate::command_table::is_readonly(&name.to_ascii_lowercase());
        if let Some(v) = crate::redis_cluster::redirect(node, args, read, s) {
            return v;
        }
    }
    if let Some(op) = single_op(node, args) {
        return match op {
            Ok(op) => node.exec(op),
            Err(e) => e,
        };
    }
    if let Some(v) = crate::backup::command(node, &name, rest) {
        return v;
    }
    match (name.as_str(), rest) {
        ("PING", []) => Value::Simple("PONG".into()),
        ("PING", [m]) | ("ECHO", [m]) => Value::bulk(m.clone()),
        ("SELECT", [db]) if db.as_slice() == b"0" => Value::ok(),
        ("SELECT", [_]) => Value::err("ERR DB index is out of range"),
        ("COMMAND", _) => crate::command_table::command(rest),
        ("CONFIG", [sub, pats @ ..]) if upper(sub) == "GET" && !pats.is_empty() => {
            crate::config_get::config_get(node.config(), pats)
        }
        ("CONFIG", [sub]) if upper(sub) == "GET" => arity("config|get"),
        ("CONFIG", [sub, ..]) => {
            Value::err(format!("ERR unknown subcommand '{}'. Try CONFIG HELP.", String::from_utf8_lossy(sub)))
        }
        ("CLIENT", _) => crate::hello::client(rest, s),
        ("CLUSTER", _) => crate::redis_cluster::cluster(node, rest),
        ("READONLY", []) => crate::redis_cluster::readonly(node, s, true),
        ("READWRITE", []) => crate::redis_cluster::readonly(node, s, false),
        ("DEL", keys) | ("EXISTS", keys) | ("MGET", keys) if !keys.is_empty() => {
            let groups = by_group(node, keys);
            let ops = groups
                .iter()
                .map(|(&group, ks)| {
                    let ks: Vec<Vec<u8>> = ks.iter().map(|(_, k)| k.clone()).collect();
                    match name.as_str() {
                        "DEL" => Op::write(group, WriteCmd::Del(ks).encode()),
                        "EXISTS" => Op::Read { group, q: ReadQ::Exists(ks) },
                        _ => Op::Read { group, q: ReadQ::MGet(ks) },
                    }
                })
                .collect();
            let vs = exec_all(node, ops);
            if name != "MGET" {
                return sum_ints(vs);
            }
            if let Some(e) = first_error(&vs) {
                return e;
            }
            let mut out = vec![Value::Bulk(None); keys.len()];
            for (v, ks) in vs.into_iter().zip(groups.values()) {
                let Value::Array(Some(items)) = v else {
                    return Value::err("ERR internal error: bad MGET reply");
                };
                for (item, (pos, _)) in items.into_iter().zip(ks) {
                    out[*pos] = item;
                }
            }
            Value::Array(Some(out))
        }
        ("MSET", kv) if !kv.is_empty() && kv.len() % 2 == 0 => {
            let keys: Vec<Vec<u8>> = kv.iter().step_by(2).cloned().collect();
            let ops = by_group(node, &keys)
                .into_iter()
                .map(|(group, ks)| {
                    Op::write(
                        group,
                        WriteCmd::MSet(ks.into_iter().map(|(i, k)| (k, kv[2 * i + 1].clone())).collect())
                            .encode(),
                    )
                })
                .collect();
            let vs = exec_all(node, ops);
            first_error(&vs).unwrap_or_else(Value::ok)
        }
        ("KEYS", [pattern]) => {
            let mut keys = Vec::new();
            for v in every_shard(node, |group| Op::Read { group, q: ReadQ::Keys(pattern.clone()) }) {
                match v {
                    Value::Array(Some(ks)) => keys.extend(ks),
                    e => return e,
                }
            }
            Value::Array(Some(keys))
        }
        ("SCAN", [cursor, opts @ ..]) => scan(node, cursor, opts),
        ("FLUSHDB", opts) if opts.len() <= 1 => {
            if let [o] = opts {
                if !matches!(upper(o).as_str(), "SYNC" | "ASYNC") {
                    return Value::err("ERR syntax error");
                }
            }
            let vs = every_shard(node, |group| Op::write(group, WriteCmd::Flush.encode()));
            first_error(&vs).unwrap_or_else(Value::ok)
        }
        ("DBSIZE", []) => sum_ints(every_shard(node, |group| Op::Read { group, q: ReadQ::Count })),
        ("INFO", _) => crate::info::info(node, rest),
        ("FLOTILLA.STATUS", []) => match serde_json::to_vec(&node.status()) {
            Ok(j) => Value::bulk(j),
            Err(e) => Value::err(format!("ERR {e}")),
        },
        ("FLOTILLA.REGISTER", [id, peer, client]) => {
            let Ok(id) = int_arg(id).and_then(|i| u64::try_from(i).map_err(|_| Value::Int(0))) else {
                return Value::err("ERR node id must be a positive integer");
            };
            let (peer, client) =
                (String::from_utf8_lossy(peer).into_owned(), String::from_utf8_lossy(client).into_owned());
            if id == 0
                || peer.parse::<std::net::SocketAddr>().is_err()
                || client.parse::<std::net::SocketAddr>().is_err()
            {
                return Value::err("ERR usage: FLOTILLA.REGISTER <id > 0> <peer ip:port> <client ip:port>");
            }
            match serde_json::to_vec(&MetaCmd::Register { id, info: NodeInfo { peer, client } }) {
                Ok(cmd) => node.exec(Op::write(META_GROUP, cmd)),
                Err(e) => Value::err(format!("ERR {e}")),
            }
        }
        ("FLOTILLA.UNREGISTER", [id]) => {
            let Some(id) =
                std::str::from_utf8(id).ok().and_then(|s| s.parse::<u64>().ok()).filter(|&i| i != 0)
            else {
                return Value::err("ERR usage: FLOTILLA.UNREGISTER <id > 0>");
            };
            match serde_json::to_vec(&MetaCmd::Unregister { id }) {
                Ok(cmd) => node.exec(Op::write(META_GROUP, cmd)),
                Err(e) => Value::err(format!("ERR {e}")),
            }
        }
        ("FLOTILLA.MEMBER", [kind, group, n]) => {
            let (Ok(group), Ok(n)) = (int_arg(group), int_arg(n)) else {
                return Value::err("ERR group and node must be integers");
            };
            let (group, n) = (group as u64, n as u64);
            let change = match upper(kind).as_str() {
                "ADDLEARNER" => Member::AddLearner(n),
                "PROMOTE" => Member::Promote(n),
                "ADDVOTER" => Member::AddVoter(n),
                "REMOVE" => Member::Remove(n),
                _ => return Value::err("ERR change must be addlearner, promote, addvoter or remove"),
            };
            node.exec(Op::Member { group, change })
        }
        ("FLOTILLA.TRANSFER", [group, n]) => {
            let (Ok(group), Ok(to)) = (int_arg(group), int_arg(n)) else {
                return Value::err("ERR group and node must be integers");
            };
            node.exec(Op::Transfer { group: group as u64, to: to as u64 })
        }
        ("FLOTILLA.RELOADCERTS", []) => match node.reload_certs() {
            Ok(()) => Value::ok(),
            Err(e) => Value::err(format!("ERR certificates not reloaded, the current ones stay in use: {e}")),
        },
        ("FLOTILLA.LOCAL", a) => match Op::from_args(a) {
            Some(op) => node.exec_local(&op).to_value(),
            None => Value::err("ERR malformed FLOTILLA.LOCAL"),
        },
        (
            "GET"
            | "SET"
            | "INCR"
            | "DECR"
            | "INCRBY"
            | "DECRBY"
            | "DEL"
            | "EXISTS"
            | "MGET"
            | "MSET"
            | "STRLEN"
            | "TYPE"
            | "KEYS"
            | "SCAN"
            | "FLUSHDB"
            | "CONFIG"
            | "APPEND"
            | "GETSET"
            | "GETDEL"
            | "SETNX"
            | "DBSIZE"
            | "PING"
            | "ECHO"
            | "SELECT"
            | "READONLY"
            | "READWRITE"
            | "FLOTILLA.STATUS"
            | "FLOTILLA.REGISTER"
            | "FLOTILLA.MEMBER"
            | "FLOTILLA.TRANSFER"
            | "FLOTILLA.RELOADCERTS",
            _,
        ) => arity(&name),
        _ => unknown_command(first, rest),
    }
}

/// Redis 7.0's reply to an unknown command, word for word (`processCommand`): the name cut
/// at 128 bytes, then the first arguments, each quoted and followed by a space, until 128
/// bytes of them are written. Line breaks become spaces when the reply is written.
pub fn unknown_command(name: &[u8], args: &[Vec<u8>]) -> Value {
    let mut listed = String::new();
    for a in args {
        if listed.len() >= 128 {
            break;
        }
        let room = 128 - listed.len();
        listed.push('\'');
        listed.push_str(&String::from_utf8_lossy(&a[..a.len().min(room)]));
        listed.push_str("' ");
    }
    Value::err(format!(
        "ERR unknown command '{}', with args beginning with: {listed}",
        String::from_utf8_lossy(&name[..name.len().min(128)])
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The name on the stack reads as the allocated one does, for short and long names and
    /// names that are not ASCII.
    #[test]
    fn an_upper_name_on_the_stack_reads_as_the_allocated_one() {
        for name in [
            &b"set"[..],
            b"cLuStEr",
            b"",
            b"CONFIG",
            &[b'x'; 24],
            &[b'y'; 25],
            "s\u{e9}t".as_bytes(),
            &[0xff, b'a'],
        ] {
            let n = upper_name(name);
            assert_eq!(&*n, upper(name).as_str(), "{name:?}");
            assert_eq!(n.long.is_some(), name.len() > NAME_INLINE || !name.is_ascii(), "{name:?}");
        }
    }
}
