//! The connection commands a client library sends first: `HELLO [protover [AUTH user pass]
//! [SETNAME name]]` (the protocol switch to RESP3, with Redis 7's reply and errors word for
//! word) and `CLIENT ID | SETNAME | GETNAME | SETINFO`.
//!
//! Owns the connection's identity in the [`Session`] (its id, name and protocol). Never
//! touches sockets: the server writes each batch's replies in the protocol the session
//! holds after it, and runs a HELLO in a batch of its own so that the replies before it
//! keep the old protocol.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::acl::Acl;
use crate::commands::Session;
use crate::resp::{Proto, Value};

/// The Redis version flotilla-kv reports (`HELLO`'s `version`): the protocol and command
/// replies it follows are Redis 7.0's.
pub const REDIS_VERSION: &str = "7.0.0";

/// The next client id (Redis's: unique per process, from 1, never reused).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A new, never used client id.
pub fn next_client_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

fn upper(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_ascii_uppercase()
}

/// Redis's rule for client names: no spaces, newlines or other characters outside `!`..`~`.
fn valid_name(n: &[u8]) -> bool {
    n.iter().all(|&c| (b'!'..=b'~').contains(&c))
}

const BAD_NAME: &str = "ERR Client names cannot contain spaces, newlines or special characters.";

/// `HELLO`: switches the protocol (2 or 3), optionally authenticates and names the
/// connection, and answers the server's description (a map: a flat array in RESP2).
/// `mode` is `standalone` or `cluster`.
pub fn hello(acl: &Acl, args: &[Vec<u8>], s: &mut Session, mode: &str) -> Value {
    let mut proto = None;
    if let Some(v) = args.first() {
        match std::str::from_utf8(v).ok().and_then(|t| t.parse::<i64>().ok()) {
            None => return Value::err("ERR Protocol version is not an integer or out of range"),
            Some(2) => proto = Some(Proto::Resp2),
            Some(3) => proto = Some(Proto::Resp3),
            Some(_) => return Value::err("NOPROTO unsupported protocol version"),
        }
    }
    let mut auth = None;
    let mut name = None;
    let mut j = 1;
    while j < args.len() {
        let more = args.len() - 1 - j;
        match upper(&args[j]).as_str() {
            "AUTH" if more >= 2 => {
                auth = Some([args[j + 1].clone(), args[j + 2].clone()]);
                j += 3;
            }
            "SETNAME" if more >= 1 => {
                name = Some(args[j + 1].clone());
                j += 2;
            }
            _ => {
                return Value::err(format!(
                    "ERR Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(&args[j])
                ))
            }
        }
    }
    if let Some(a) = auth {
        match acl.auth(&a) {
            Ok(u) => s.user = u,
            Err(e) => return e,
        }
    }
    if !s.authed() {
        return Value::err(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
        );
    }
    if let Some(n) = name {
        if !valid_name(&n) {
            return Value::err(BAD_NAME);
        }
        s.name = if n.is_empty() { None } else { Some(n) };
    }
    if let Some(p) = proto {
        s.proto = p;
    }
    let b = |t: &str| Value::bulk(t.as_bytes().to_vec());
    Value::Map(vec![
        (b("server"), b("redis")),
        (b("version"), b(REDIS_VERSION)),
        (b("proto"), Value::Int(s.proto.version())),
        (b("id"), Value::Int(s.id as i64)),
        (b("mode"), b(mode)),
        (b("role"), b("master")),
        (b("modules"), Value::Array(Some(vec![]))),
    ])
}

/// `CLIENT <subcommand>`: ID, SETNAME, GETNAME and SETINFO (LIB-NAME / LIB-VER, which
/// client libraries send on connect; accepted and kept nowhere). Other subcommands get
/// Redis's unknown-subcommand error.
pub fn client(args: &[Vec<u8>], s: &mut Session) -> Value {
    let Some(sub) = args.first() else {
        return Value::err("ERR wrong number of arguments for 'client' command");
    };
    match (upper(sub).as_str(), &args[1..]) {
        ("ID", []) => Value::Int(s.id as i64),
        ("GETNAME", []) => Value::Bulk(s.name.clone()),
        ("SETNAME", [n]) => {
            if !valid_name(n) {
                return Value::err(BAD_NAME);
            }
            s.name = if n.is_empty() { None } else { Some(n.clone()) };
            Value::ok()
        }
        ("SETINFO", [attr, v]) => match upper(attr).as_str() {
            "LIB-NAME" | "LIB-VER" if valid_name(v) => Value::ok(),
            "LIB-NAME" | "LIB-VER" => Value::err(format!(
                "ERR {} cannot contain spaces, newlines or special characters.",
                upper(attr)
            )),
            _ => Value::err(format!("ERR Unrecognized option '{}'", String::from_utf8_lossy(attr))),
        },
        (n @ ("ID" | "GETNAME" | "SETNAME" | "SETINFO"), _) => Value::err(format!(
            "ERR wrong number of arguments for 'client|{}' command",
            n.to_ascii_lowercase()
        )),
        _ => {
            Value::err(format!("ERR unknown subcommand '{}'. Try CLIENT HELP.", String::from_utf8_lossy(sub)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::{Secret, User};

    fn sess(acl: &Acl) -> Session {
        Session::client(acl)
    }

    /// HELLO's reply, errors and protocol switch, as Redis 7.0 gives them (`helloCommand`).
    #[test]
    fn hello_switches_the_protocol_and_answers_as_redis() {
        let acl = Acl::default();
        let mut s = sess(&acl);
        assert_eq!(s.proto, Proto::Resp2);
        let r = hello(&acl, &[b"3".to_vec()], &mut s, "standalone");
        assert_eq!(s.proto, Proto::Resp3);
        let Value::Map(kv) = &r else { panic!("{r:?}") };
        let keys: Vec<_> = kv.iter().map(|(k, _)| k.clone()).collect();
        let want: Vec<_> = ["server", "version", "proto", "id", "mode", "role", "modules"]
            .iter()
            .map(|k| Value::bulk(*k))
            .collect();
        assert_eq!(keys, want);
        assert_eq!(kv[2].1, Value::Int(3));
        assert_eq!(kv[3].1, Value::Int(s.id as i64));
        // No argument: the reply, and the protocol stays.
        let _ = hello(&acl, &[], &mut s, "standalone");
        assert_eq!(s.proto, Proto::Resp3);
        assert_eq!(hello(&acl, &[b"2".to_vec()], &mut s, "standalone").to_bytes(Proto::Resp2)[..3], *b"*14");
        assert_eq!(s.proto, Proto::Resp2);
        assert_eq!(
            hello(&acl, &[b"4".to_vec()], &mut s, "x"),
            Value::err("NOPROTO unsupported protocol version")
        );
        assert_eq!(
            hello(&acl, &[b"x".to_vec()], &mut s, "x"),
            Value::err("ERR Protocol version is not an integer or out of range")
        );
        assert_eq!(
            hello(&acl, &[b"3".to_vec(), b"AUTH".to_vec(), b"u".to_vec()], &mut s, "x"),
            Value::err("ERR Syntax error in HELLO option 'AUTH'")
        );
        assert_eq!(s.proto, Proto::Resp2, "a refused HELLO changes nothing");
        let _ = hello(&acl, &[b"3".to_vec(), b"setname".to_vec(), b"app".to_vec()], &mut s, "x");
        assert_eq!(client(&[b"GETNAME".to_vec()], &mut s), Value::bulk("app"));
        assert_eq!(client(&[b"SETNAME".to_vec(), b"a b".to_vec()], &mut s), Value::err(BAD_NAME));
        assert_eq!(client(&[b"ID".to_vec()], &mut s), Value::Int(s.id as i64));
        assert_ne!(sess(&acl).id, s.id, "client ids are never reused");
    }

    /// With passwords set, HELLO needs authentication first or its AUTH option, which
    /// authenticates as AUTH does.
    #[test]
    fn hello_authenticates_or_refuses_with_noauth() {
        let acl = Acl {
            data: Some(Secret::new("pw")),
            admin_user: "admin".into(),
            admin: Some(Secret::new("adm")),
        };
        let mut s = sess(&acl);
        let r = hello(&acl, &[b"3".to_vec()], &mut s, "standalone");
        assert!(matches!(&r, Value::Error(e) if e.starts_with("NOAUTH HELLO must be called")), "{r:?}");
        assert_eq!(s.proto, Proto::Resp2);
        let r =
            hello(&acl, &[b"3".to_vec(), b"AUTH".to_vec(), b"default".to_vec(), b"no".to_vec()], &mut s, "x");
        assert!(matches!(&r, Value::Error(e) if e.starts_with("WRONGPASS")), "{r:?}");
        let r =
            hello(&acl, &[b"3".to_vec(), b"AUTH".to_vec(), b"default".to_vec(), b"pw".to_vec()], &mut s, "x");
        assert!(matches!(r, Value::Map(_)));
        assert_eq!((s.user, s.proto), (User::Data, Proto::Resp3));
    }
}
