//! `COMMAND`: what client libraries read to learn the server's commands (their arity,
//! flags and key positions; a cluster client routes by the key positions). The replies are
//! Redis 7.0's own for the commands flotilla-kv serves: `command_info.resp` and
//! `command_docs.resp` are redis-server's `COMMAND INFO` and `COMMAND DOCS` replies
//! (RESP3), captured by `examples/kv/tools/capture_command_table.py`, with the
//! subcommands of CLIENT, CONFIG and COMMAND cut down to the ones served here.
//!
//! Owns the table and the `COMMAND` subcommands (none, COUNT, LIST, INFO, DOCS). Never runs
//! a command.

use std::sync::OnceLock;

use crate::resp::{parse_value, Value};

const INFO: &[u8] = include_bytes!("command_info.resp");
const DOCS: &[u8] = include_bytes!("command_docs.resp");

/// The parsed table: each command's name with its `COMMAND INFO` entry and its docs.
struct Table {
    info: Vec<(String, Value)>,
    docs: Vec<(String, Value)>,
}

fn parse() -> Option<Table> {
    let (Value::Array(Some(infos)), _) = parse_value(INFO, usize::MAX >> 1, 16).ok()?? else { return None };
    let (Value::Map(docs), _) = parse_value(DOCS, usize::MAX >> 1, 16).ok()?? else { return None };
    let name = |v: &Value| match v {
        Value::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    };
    let mut info = Vec::new();
    for v in infos {
        let Value::Array(Some(fields)) = &v else { return None };
        info.push((name(fields.first()?)?, v));
    }
    let docs = docs.into_iter().map(|(k, v)| Some((name(&k)?, v))).collect::<Option<Vec<_>>>()?;
    Some(Table { info, docs })
}

/// The table, parsed once. The embedded files are this crate's own and a unit test parses
/// them, so `None` (an empty table) cannot happen in a build that passed its tests.
fn table() -> &'static Table {
    static T: OnceLock<Table> = OnceLock::new();
    T.get_or_init(|| parse().unwrap_or(Table { info: Vec::new(), docs: Vec::new() }))
}

/// The names of the commands in the table (lower case).
pub fn names() -> impl Iterator<Item = &'static str> {
    table().info.iter().map(|(n, _)| n.as_str())
}

/// The legacy key positions of a command (`COMMAND INFO`'s first key, last key and step:
/// a negative last key counts from the end, 0 for first means no keys); `None` if the
/// command is not in the table. `name` in lower case.
pub fn key_positions(name: &str) -> Option<(i64, i64, i64)> {
    let (_, v) = table().info.iter().find(|(n, _)| n == name)?;
    let Value::Array(Some(f)) = v else { return None };
    match (f.get(3)?, f.get(4)?, f.get(5)?) {
        (Value::Int(a), Value::Int(b), Value::Int(c)) => Some((*a, *b, *c)),
        _ => None,
    }
}

/// Whether the command only reads (its `COMMAND INFO` flags include `readonly`). `name`
/// in lower case.
pub fn is_readonly(name: &str) -> bool {
    let Some((_, Value::Array(Some(f)))) = table().info.iter().find(|(n, _)| n == name) else { return false };
    match f.get(2) {
        Some(Value::Set(flags) | Value::Array(Some(flags))) => {
            flags.iter().any(|v| matches!(v, Value::Simple(s) if s == "readonly"))
        }
        _ => false,
    }
}

/// The keys among `args` (the command's name first) by [`key_positions`]: none for a
/// command with no keys or not in the table.
pub fn command_keys(args: &[Vec<u8>]) -> Vec<&[u8]> {
    let Some(name) = args.first() else { return Vec::new() };
    let Some((first, last, step)) = key_positions(&String::from_utf8_lossy(name).to_ascii_lowercase()) else {
        return Vec::new();
    };
    let n = args.len() as i64;
    let last = if last < 0 { n + last } else { last.min(n - 1) };
    if first <= 0 || step <= 0 || first > last {
        return Vec::new();
    }
    (first..=last).step_by(step as usize).filter_map(|i| args.get(i as usize).map(Vec::as_slice)).collect()
}

/// `COMMAND [COUNT | LIST | INFO [name ...] | DOCS [name ...]]`, answered as Redis 7.0 does.
pub fn command(args: &[Vec<u8>]) -> Value {
    let t = table();
    let lower = |b: &[u8]| String::from_utf8_lossy(b).to_ascii_lowercase();
    let Some((sub, rest)) = args.split_first() else {
        return Value::Array(Some(t.info.iter().map(|(_, v)| v.clone()).collect()));
    };
    match (lower(sub).as_str(), rest) {
        ("count", []) => Value::Int(t.info.len() as i64),
        ("list", []) => Value::Array(Some(t.info.iter().map(|(n, _)| Value::bulk(n.as_bytes())).collect())),
        ("info", []) => Value::Array(Some(t.info.iter().map(|(_, v)| v.clone()).collect())),
        ("info", names) => Value::Array(Some(
            names
                .iter()
                .map(|n| {
                    let n = lower(n);
                    t.info.iter().find(|(k, _)| *k == n).map_or(Value::Bulk(None), |(_, v)| v.clone())
                })
                .collect(),
        )),
        ("docs", []) => {
            Value::Map(t.docs.iter().map(|(k, v)| (Value::bulk(k.as_bytes()), v.clone())).collect())
        }
        ("docs", names) => Value::Map(
            names
                .iter()
                .filter_map(|n| {
                    let n = lower(n);
                    t.docs.iter().find(|(k, _)| *k == n).map(|(k, v)| (Value::bulk(k.as_bytes()), v.clone()))
                })
                .collect(),
        ),
        (s @ ("count" | "list"), _) => {
            Value::err(format!("ERR wrong number of arguments for 'command|{s}' command"))
        }
        _ => Value::err(format!(
            "ERR unknown subcommand '{}'. Try COMMAND HELP.",
            String::from_utf8_lossy(sub)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The embedded replies parse, and name each command once, with its docs.
    #[test]
    fn the_embedded_table_parses_and_is_complete() {
        let t = parse().expect("command_info.resp and command_docs.resp parse");
        assert!(t.info.len() >= 27, "{}", t.info.len());
        let mut names: Vec<_> = t.info.iter().map(|(n, _)| n.clone()).collect();
        let docs: Vec<_> = t.docs.iter().map(|(n, _)| n.clone()).collect();
        assert_eq!(names, docs);
        names.dedup();
        assert_eq!(names.len(), t.info.len());
        assert_eq!(command(&[b"COUNT".to_vec()]), Value::Int(t.info.len() as i64));
        let Value::Array(Some(e)) = command(&[b"info".to_vec(), b"GET".to_vec(), b"nosuch".to_vec()]) else {
            panic!()
        };
        assert_eq!(e[1], Value::Bulk(None));
        let Value::Array(Some(get)) = &e[0] else { panic!() };
        assert_eq!(get[1], Value::Int(2), "GET's arity");
        assert_eq!(get[3], Value::Int(1), "GET's first key");
    }

    #[test]
    fn keys_are_found_by_the_tables_positions() {
        let a = |v: &[&str]| v.iter().map(|s| s.as_bytes().to_vec()).collect::<Vec<_>>();
        let k = |v: Vec<&[u8]>| {
            v.into_iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect::<Vec<_>>()
        };
        assert_eq!(k(command_keys(&a(&["get", "x"]))), ["x"]);
        assert_eq!(k(command_keys(&a(&["SET", "x", "1", "NX"]))), ["x"]);
        assert_eq!(k(command_keys(&a(&["mset", "a", "1", "b", "2"]))), ["a", "b"]);
        assert_eq!(k(command_keys(&a(&["DEL", "a", "b", "c"]))), ["a", "b", "c"]);
        assert_eq!(k(command_keys(&a(&["MGET", "a", "b"]))), ["a", "b"]);
        assert!(command_keys(&a(&["PING"])).is_empty());
        assert!(command_keys(&a(&["nosuch", "a"])).is_empty());
        assert!(command_keys(&a(&["GET"])).is_empty(), "an arity error names no key");
        assert!(is_readonly("get") && is_readonly("mget") && is_readonly("exists"));
        assert!(!is_readonly("set") && !is_readonly("del") && !is_readonly("nosuch"));
    }
}
