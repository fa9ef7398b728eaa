//! MULTI / EXEC / DISCARD / WATCH / UNWATCH: a connection's transaction, queued in its
//! session and applied as one Raft entry ([`crate::sm::WriteCmd::Exec`]) in one shard.
//!
//! Owns the queue and the watched keys of a connection, Redis 7.0's replies and errors
//! (`+QUEUED`, `-EXECABORT` after a queue-time error, a null array when a watched key
//! changed), the check that a transaction's keys share one shard ([`tx_group`]), and what
//! the entry does at apply ([`apply`]): if every watched key is unchanged since WATCH read
//! it (after a read barrier), every queued command runs at the entry's apply time, reads
//! included, so they see the transaction's own writes. The entry is proposed like any
//! write, in the node's client session, so a retried EXEC applies once. Never touches
//! sockets.
//!
//! A transaction holds at most [`Node::max_tx_bytes`] (its queued commands and watched
//! keys, each counted with [`ITEM_OVERHEAD`]): EXEC proposes it as one entry, which the
//! engine refuses past that size anyway, and without the bound one connection could make
//! the node hold any amount by queueing and never calling EXEC. Past it the command gets
//! an error and the transaction is aborted at once (its queue dropped; EXEC answers
//! EXECABORT, as after any queue-time error); a WATCH past it is refused and adds nothing.

use crate::commands::Session;
use crate::keycmd;
use crate::keyspace::{Keyspace, WatchState};
use crate::node::{Node, Op, ReadQ};
use crate::resp::Value;
use crate::sm::WriteCmd;

/// A connection's transaction state.
#[derive(Debug, Default, Clone)]
pub struct TxState {
    /// The queued commands while MULTI is open.
    queue: Option<Vec<Vec<Vec<u8>>>>,
    /// A command was refused while queueing: EXEC answers EXECABORT.
    aborted: bool,
    /// The watched keys and what WATCH saw of each.
    watched: Vec<(Vec<u8>, WatchState)>,
    /// What `queue` holds, bytes ([`command_bytes`]).
    queued_bytes: usize,
    /// What `watched` holds, bytes ([`watched_bytes`]).
    watched_bytes: usize,
}

/// Bytes counted for each queued argument, each queued command and each watched key
/// beside their own bytes: their buffers' headers and the watch state.
pub const ITEM_OVERHEAD: usize = 32;

/// What a queued command holds, bytes.
fn command_bytes(args: &[Vec<u8>]) -> usize {
    args.iter().map(|a| a.len() + ITEM_OVERHEAD).sum::<usize>() + ITEM_OVERHEAD
}

/// What watched keys hold, bytes.
fn watched_bytes(w: &[(Vec<u8>, WatchState)]) -> usize {
    w.iter().map(|(k, _)| k.len() + ITEM_OVERHEAD).sum()
}

impl TxState {
    /// Whether MULTI is open (commands are queued, not run).
    pub fn open(&self) -> bool {
        self.queue.is_some()
    }
}

/// Handles the transaction commands, and queues any command while MULTI is open; `None`
/// when `args` is none of these (the caller runs it). `name` is upper case.
pub fn intercept(node: &Node, name: &str, args: &[Vec<u8>], s: &mut Session) -> Option<Value> {
    let tx = &mut s.tx;
    Some(match name {
        // Redis turns any refusal of EXEC itself into EXECABORT, and drops the transaction.
        "EXEC" if args.len() != 1 => {
            **tx = TxState::default();
            Value::err(
                "EXECABORT Transaction discarded because of: wrong number of arguments for 'exec' command",
            )
        }
        "MULTI" | "DISCARD" if args.len() != 1 => {
            flag(tx);
            keycmd::arity_error(name)
        }
        "WATCH" if args.len() < 2 => {
            flag(tx);
            keycmd::arity_error("watch")
        }
        "MULTI" if tx.open() => Value::err("ERR MULTI calls can not be nested"),
        "MULTI" => {
            tx.queue = Some(Vec::new());
            tx.aborted = false;
            Value::ok()
        }
        "EXEC" if !tx.open() => Value::err("ERR EXEC without MULTI"),
        "DISCARD" if !tx.open() => Value::err("ERR DISCARD without MULTI"),
        "DISCARD" => {
            **tx = TxState::default();
            Value::ok()
        }
        "EXEC" => {
            let t = std::mem::take(&mut **tx);
            if t.aborted {
                return Some(Value::err("EXECABORT Transaction discarded because of previous errors."));
            }
            exec(node, t.queue.unwrap_or_default(), t.watched)
        }
        "WATCH" if tx.open() => Value::err("ERR WATCH inside MULTI is not allowed"),
        "WATCH" => match watch(node, &args[1..]) {
            Ok(w) => {
                let max = node.max_tx_bytes();
                let bytes = watched_bytes(&w);
                let tx = &mut s.tx;
                if tx.watched_bytes + bytes > max {
                    return Some(Value::err(format!(
                        "ERR too many watched keys: they would hold more than {max} bytes, the largest \
                         transaction this server proposes"
                    )));
                }
                tx.watched.extend(w);
                tx.watched_bytes += bytes;
                Value::ok()
            }
            Err(e) => e,
        },
        "UNWATCH" if !tx.open() && args.len() == 1 => {
            tx.watched = Vec::new();
            tx.watched_bytes = 0;
            Value::ok()
        }
        "QUIT" => return None,
        _ if tx.open() => queue(tx, name, args, node.max_tx_bytes()),
        _ => return None,
    })
}

fn flag(tx: &mut TxState) {
    if tx.open() {
        abort(tx);
    }
}

/// Marks the open transaction for EXECABORT and drops its queue: it will never run.
fn abort(tx: &mut TxState) {
    tx.aborted = true;
    tx.queue = Some(Vec::new());
    tx.queued_bytes = 0;
}

/// Queues a command inside MULTI: refused (and the transaction flagged) when unknown, of
/// the wrong arity, or one a transaction cannot hold here.
fn queue(tx: &mut TxState, name: &str, args: &[Vec<u8>], max: usize) -> Value {
    let refused = match keycmd::spec(name) {
        Some(spec) if keycmd::arity_ok(spec, args.len()) => None,
        Some(_) => Some(keycmd::arity_error(name)),
        None if name == "UNWATCH" => None,
        None if crate::command_table::names().any(|n| n.eq_ignore_ascii_case(name)) => {
            Some(Value::err("ERR Command not allowed inside a transaction"))
        }
        None => Some(crate::commands::unknown_command(&args[0], &args[1..])),
    };
    if let Some(e) = refused {
        abort(tx);
        return e;
    }
    if tx.aborted {
        // Answered as Redis answers it; kept nowhere: EXEC discards the transaction.
        return Value::Simple("QUEUED".into());
    }
    let bytes = command_bytes(args);
    if tx.queued_bytes + tx.watched_bytes + bytes > max {
        abort(tx);
        return Value::err(format!(
            "ERR transaction too large: its commands and watched keys would hold more than {max} \
             bytes, the largest entry this server proposes; EXEC will discard it"
        ));
    }
    if let Some(q) = tx.queue.as_mut() {
        q.push(args.to_vec());
        tx.queued_bytes += bytes;
    }
    Value::Simple("QUEUED".into())
}

/// The one group a transaction's keys (its commands' and its watched keys) live in:
/// `Ok(None)` without keys, an error reply when they span groups. The one place that
/// decides whether a set of keys may be in one transaction.
pub fn tx_group<'a>(node: &Node, keys: impl IntoIterator<Item = &'a [u8]>) -> Result<Option<u64>, Value> {
    let mut group = None;
    for k in keys {
        let g = node.group_of(k);
        if group.is_some_and(|x| x != g) {
            return Err(Value::err(
                "ERR a transaction's keys (its commands' and the watched ones) must be in one shard",
            ));
        }
        group = Some(g);
    }
    Ok(group)
}

/// WATCH: reads each key's state after a read barrier on its shard.
fn watch(node: &Node, keys: &[Vec<u8>]) -> Result<Vec<(Vec<u8>, WatchState)>, Value> {
    let mut out = Vec::with_capacity(keys.len());
    let mut by_group: std::collections::BTreeMap<u64, Vec<Vec<u8>>> = Default::default();
    for k in keys {
        by_group.entry(node.group_of(k)).or_default().push(k.clone());
    }
    for (group, ks) in by_group {
        let v = node.exec(Op::Read { group, q: ReadQ::Watch(ks.clone()) });
        let Value::Array(Some(states)) = v else {
            return Err(match v {
                e @ Value::Error(_) => e,
                _ => Value::err("ERR internal error: bad WATCH reply"),
            });
        };
        if states.len() != ks.len() {
            return Err(Value::err("ERR internal error: bad WATCH reply"));
        }
        for (k, st) in ks.into_iter().zip(states) {
            out.push((
                k,
                decode_state(&st).ok_or_else(|| Value::err("ERR internal error: bad WATCH reply"))?,
            ));
        }
    }
    Ok(out)
}

/// A watched key's state as a read answers it: `[present, index, live]`.
pub fn encode_state(w: &WatchState) -> Value {
    Value::Array(Some(vec![
        Value::Int(i64::from(w.present)),
        Value::Int(w.index as i64),
        Value::Int(i64::from(w.live)),
    ]))
}

fn decode_state(v: &Value) -> Option<WatchState> {
    let Value::Array(Some(p)) = v else { return None };
    let [Value::Int(present), Value::Int(index), Value::Int(live)] = p.as_slice() else { return None };
    Some(WatchState { present: *present == 1, index: *index as u64, live: *live == 1 })
}

/// EXEC: one entry with the queued commands and the watched keys, in their one shard.
fn exec(node: &Node, cmds: Vec<Vec<Vec<u8>>>, watched: Vec<(Vec<u8>, WatchState)>) -> Value {
    if cmds.is_empty() && watched.is_empty() {
        return Value::Array(Some(vec![]));
    }
    let mut keys: Vec<&[u8]> = watched.iter().map(|(k, _)| k.as_slice()).collect();
    for c in &cmds {
        let name = String::from_utf8_lossy(&c[0]).to_ascii_uppercase();
        if let Some(spec) = keycmd::spec(&name) {
            keys.extend(keycmd::keys_of(spec, c));
        }
    }
    // Cluster mode, as Redis Cluster judges EXEC: every key of the transaction in one slot
    // (else -CROSSSLOT), served here (else -MOVED); the transaction is discarded either way.
    if node.config().cluster_mode {
        if let Some(refused) = crate::redis_cluster::redirect_keys(node, &keys, false, false) {
            return refused;
        }
    }
    let group = match tx_group(node, keys) {
        Ok(g) => g.unwrap_or_else(|| node.group_of(b"")),
        Err(e) => return e,
    };
    let entry = WriteCmd::Exec { watched, cmds };
    match node.exec(Op::write(group, entry.encode())) {
        // The null array travels back from the state machine as RESP3's `_`, read as the
        // null bulk string: EXEC never answers that otherwise.
        Value::Bulk(None) => Value::Array(None),
        v => v,
    }
}

/// Applies a transaction at the keyspace's apply time: a null array if a watched key
/// changed since it was watched, else one reply per command.
pub fn apply(ks: &mut Keyspace, watched: &[(Vec<u8>, WatchState)], cmds: &[Vec<Vec<u8>>]) -> Value {
    if !watched.iter().all(|(k, w)| ks.watch_holds(k, w)) {
        return Value::Array(None);
    }
    Value::Array(Some(cmds.iter().map(|c| keycmd::run(ks, c)).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyspace::Val;

    fn a(s: &[&str]) -> Vec<Vec<u8>> {
        s.iter().map(|x| x.as_bytes().to_vec()).collect()
    }

    #[test]
    fn a_changed_watched_key_discards_the_transaction() {
        let mut ks = Keyspace::default();
        ks.begin(1, Some(1));
        ks.put(b"k".to_vec(), Val::Str(b"1".to_vec()), None);
        let w = vec![(b"k".to_vec(), ks.watch_state(b"k", 1))];
        let cmds = vec![a(&["INCR", "k"]), a(&["GET", "k"])];
        ks.begin(2, Some(2));
        assert_eq!(apply(&mut ks, &w, &cmds), Value::Array(Some(vec![Value::Int(2), Value::bulk("2")])));
        // Its own write changed the key: the same watch fails now.
        ks.begin(3, Some(3));
        assert_eq!(apply(&mut ks, &w, &cmds), Value::Array(None));
        assert_eq!(ks.get(b"k", 3).map(|e| e.val.clone()), Some(Val::Str(b"2".to_vec())));
    }

    /// A write refused with WRONGTYPE does not count as a modification of the watched key.
    #[test]
    fn a_refused_write_leaves_a_watched_key_unchanged() {
        let mut ks = Keyspace::default();
        ks.begin(1, Some(1));
        ks.put(b"k".to_vec(), Val::Str(b"1".to_vec()), None);
        let w = vec![(b"k".to_vec(), ks.watch_state(b"k", 1))];
        ks.begin(2, Some(2));
        assert_eq!(
            keycmd::run(&mut ks, &a(&["HSET", "k", "f", "v"])),
            Value::err(crate::keyspace::WRONGTYPE)
        );
        assert_eq!(
            keycmd::run(&mut ks, &a(&["HINCRBY", "k", "f", "1"])),
            Value::err(crate::keyspace::WRONGTYPE)
        );
        ks.begin(3, Some(3));
        assert_eq!(apply(&mut ks, &w, &[a(&["GET", "k"])]), Value::Array(Some(vec![Value::bulk("1")])));
    }

    #[test]
    fn queueing_refuses_unknown_and_wrong_arity_commands_and_flags_the_transaction() {
        let mut tx = TxState { queue: Some(vec![]), ..Default::default() };
        assert_eq!(queue(&mut tx, "SET", &a(&["SET", "k", "v"]), 1 << 20), Value::Simple("QUEUED".into()));
        assert!(!tx.aborted);
        assert_eq!(queue(&mut tx, "GET", &a(&["GET"]), 1 << 20), keycmd::arity_error("get"));
        assert!(tx.aborted);
        let mut tx = TxState { queue: Some(vec![]), ..Default::default() };
        assert!(
            matches!(queue(&mut tx, "NOSUCH", &a(&["NOSUCH"]), 1 << 20), Value::Error(e) if e.contains("unknown command"))
        );
        assert!(tx.aborted);
    }

    /// A transaction holds at most its bound: the command that would pass it is refused,
    /// the queue is dropped at once (EXEC would answer EXECABORT), and later commands are
    /// answered QUEUED but kept nowhere.
    #[test]
    fn a_transaction_past_its_bound_is_dropped_not_held() {
        let set = a(&["SET", "k", &"v".repeat(1000)]);
        let per = command_bytes(&set);
        let max = 10 * per;
        let mut tx = TxState { queue: Some(vec![]), ..Default::default() };
        for _ in 0..10 {
            assert_eq!(queue(&mut tx, "SET", &set, max), Value::Simple("QUEUED".into()));
        }
        assert_eq!(tx.queued_bytes, max);
        assert!(!tx.aborted);
        let over = queue(&mut tx, "SET", &set, max);
        assert!(matches!(&over, Value::Error(e) if e.starts_with("ERR transaction too large")), "{over:?}");
        assert!(tx.aborted);
        assert_eq!((tx.queue.as_ref().map(Vec::len), tx.queued_bytes), (Some(0), 0));
        for _ in 0..1000 {
            assert_eq!(queue(&mut tx, "SET", &set, max), Value::Simple("QUEUED".into()));
        }
        assert_eq!((tx.queue.as_ref().map(Vec::len), tx.queued_bytes), (Some(0), 0));
        // Watched keys count against the same bound.
        let mut tx = TxState {
            queue: Some(vec![]),
            watched: vec![(vec![b'w'; 9 * per], WatchState { present: false, index: 0, live: false })],
            watched_bytes: 9 * per + ITEM_OVERHEAD,
            ..Default::default()
        };
        assert!(matches!(queue(&mut tx, "SET", &set, max), Value::Error(_)));
    }
}
