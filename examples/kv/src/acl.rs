//! Who may run what on the client port, Redis ACL style: the users and their passwords
//! ([`Acl`]), `AUTH` ([`Acl::auth`]), the class of each command ([`class`]) and whether a
//! session may run it ([`Acl::check`]), protected mode ([`protected_mode_refuses`]), and
//! [`Secret`], the type every password and private key is held in so that `Debug` never
//! shows it.
//!
//! Two users, as with Redis's `requirepass` plus one ACL user:
//! - `default`, the data user: `AUTH <password>` or `AUTH default <password>`. It runs the
//!   data commands (GET, SET, ..., INFO, PING).
//! - the admin user (`admin_user`, default `admin`): `AUTH <admin_user> <password>`. It runs
//!   everything the data user runs, and the `FLOTILLA.*` admin commands (status,
//!   membership, transfer, register, unregister). The data user gets `-NOPERM` for those.
//!
//! Both passwords are set, or neither (then every loopback client is allowed everything, and
//! protected mode refuses other clients). Internal commands (`FLOTILLA.LOCAL`, node to
//! node) are never run for a client of the client port, whoever it authenticated as: they
//! arrive on the certificate-authenticated node channel only (the `internal` node channel), whose
//! sessions run nothing else. Passwords compare in constant time (`subtle`).
//!
//! Never touches sockets or the engine; owns no state beyond the configured credentials.

use std::net::IpAddr;

use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::resp::Value;

/// A password or private key: shown as `Secret(***)` by `Debug`, never its bytes.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself (to send it in AUTH or hand a key to TLS; never to print it).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `other` equals it, in time independent of where they differ.
    pub fn matches(&self, other: &[u8]) -> bool {
        bool::from(self.0.as_bytes().ct_eq(other))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret(s.to_string())
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret(s)
    }
}

/// A password for a tool: the first line of `file` when given (a trailing newline is not
/// part of it), else `env` (an environment variable's value), else none. Never from a
/// command line argument, where other users of the host could read it.
pub fn tool_password(file: Option<&std::path::Path>, env: Option<String>) -> Result<Option<Secret>, String> {
    let raw = match (file, env) {
        (Some(p), _) => {
            std::fs::read_to_string(p).map_err(|e| format!("--password-file {}: {e}", p.display()))?
        }
        (None, Some(v)) => v,
        (None, None) => return Ok(None),
    };
    let pw = raw.strip_suffix('\n').map(|s| s.strip_suffix('\r').unwrap_or(s)).unwrap_or(&raw);
    if pw.is_empty() {
        return Err("the password is empty".into());
    }
    Ok(Some(Secret::new(pw)))
}

/// The name of Redis's default user (the data user here).
pub const DEFAULT_USER: &str = "default";

/// Who a session authenticated as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum User {
    /// Nobody yet (only AUTH, QUIT are run while passwords are set).
    #[default]
    None,
    /// The data user (`default`).
    Data,
    /// The admin user.
    Admin,
    /// Another node, over the certificate-authenticated node channel (not a user of the
    /// client port at all).
    Node(u64),
}

/// What a command is, for permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Runs before authentication: AUTH, QUIT.
    Open,
    /// Data commands (and INFO, PING, ...): the data and admin users.
    Data,
    /// `FLOTILLA.*` cluster administration: the admin user.
    Admin,
    /// Node to node (`FLOTILLA.LOCAL`): the node channel only.
    Internal,
}

/// The class of the command named `name` (upper case).
pub fn class(name: &str) -> Class {
    match name {
        "AUTH" | "QUIT" | "HELLO" => Class::Open,
        "FLOTILLA.LOCAL" => Class::Internal,
        n if n.starts_with("FLOTILLA.") => Class::Admin,
        _ => Class::Data,
    }
}

/// The configured users.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    /// The data user's password; `None` with `admin` `None`: no authentication.
    pub data: Option<Secret>,
    /// The admin user's name.
    pub admin_user: String,
    /// The admin user's password.
    pub admin: Option<Secret>,
}

/// The reply to AUTH when no password is configured (Redis's).
pub const AUTH_WITHOUT_PASSWORD: &str = "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?";
/// The reply to a wrong user or password (Redis's).
pub const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

/// What protected mode answers a client from another host before closing (Redis's `DENIED`
/// reply, with Flotilla's remedies).
pub const DENIED: &str = "DENIED flotilla-kv is running in protected mode because protected mode is enabled and no password is set for the default user. In this mode connections are only accepted from the loopback interface. If you want to connect from external computers to flotilla-kv you may adopt one of the following solutions: 1) Set up an authentication password for the default user and the admin user (password_file and admin_password_file, or the FLOTILLA_PASSWORD and FLOTILLA_ADMIN_PASSWORD environment variables) and restart the node. 2) Alternatively you can disable protected mode by setting protected_mode = false in the configuration file and restarting the node, however MAKE SURE the node is not publicly accessible from internet if you do so. NOTE: You only need to do one of the above things in order for the server to start accepting connections from the outside.";

impl Acl {
    /// Whether any password is configured (else the loopback is trusted with everything).
    pub fn required(&self) -> bool {
        self.data.is_some() || self.admin.is_some()
    }

    /// The user a new client session starts as.
    pub fn initial(&self) -> User {
        if self.required() {
            User::None
        } else {
            User::Admin
        }
    }

    /// Runs `AUTH` with its arguments (after the name): the user now authenticated, or the
    /// error reply (the session's user is then unchanged, as in Redis).
    pub fn auth(&self, args: &[Vec<u8>]) -> Result<User, Value> {
        let (user, pw): (&[u8], &[u8]) = match args {
            [pw] => (DEFAULT_USER.as_bytes(), pw),
            [user, pw] => (user, pw),
            _ => return Err(Value::err("ERR wrong number of arguments for 'auth' command")),
        };
        if !self.required() {
            return match args {
                [_] => Err(Value::err(AUTH_WITHOUT_PASSWORD)),
                // Redis's default user without a password accepts any password.
                _ if user == DEFAULT_USER.as_bytes() => Ok(User::Admin),
                _ => Err(Value::err(WRONGPASS)),
            };
        }
        let ok = |s: &Option<Secret>| s.as_ref().is_some_and(|s| s.matches(pw));
        // Both compares always run: the reply time says nothing about which user matched.
        let (data, admin) = (ok(&self.data), ok(&self.admin));
        if user == DEFAULT_USER.as_bytes() && data {
            Ok(User::Data)
        } else if user == self.admin_user.as_bytes() && admin {
            Ok(User::Admin)
        } else {
            Err(Value::err(WRONGPASS))
        }
    }

    /// Whether `user` may run a command of class `c` named `name` (lower-cased in the
    /// reply): `None` if so, else the error reply (`NOAUTH` before authentication, `NOPERM`
    /// for a command the user may not run).
    pub fn check(&self, user: User, c: Class, name: &str) -> Option<Value> {
        let lower = name.to_ascii_lowercase();
        match (user, c) {
            (_, Class::Open) if !matches!(user, User::Node(_)) => None,
            (User::Node(_), Class::Internal) => None,
            (User::Node(n), _) => Some(Value::err(format!(
                "NOPERM node {n} has no permissions to run the '{lower}' command on the node channel"
            ))),
            (_, Class::Internal) => Some(Value::err(format!(
                "NOPERM '{lower}' is internal to the cluster: nodes send it over their certificate-authenticated channel, never on the client port"
            ))),
            (User::None, _) => Some(Value::err("NOAUTH Authentication required.")),
            (User::Data, Class::Admin) => Some(Value::err(format!(
                "NOPERM User {DEFAULT_USER} has no permissions to run the '{lower}' command"
            ))),
            (User::Data | User::Admin, _) => None,
        }
    }
}

/// Protected mode (Redis's): whether a client connecting from `peer` is refused, with
/// [`DENIED`], because no password is set (`acl_required` false) and protected mode is on.
/// Only loopback addresses (127.0.0.0/8, ::1, and IPv4-mapped loopback) are local.
pub fn protected_mode_refuses(protected_mode: bool, acl_required: bool, peer: IpAddr) -> bool {
    let local = match peer {
        IpAddr::V4(a) => a.is_loopback(),
        IpAddr::V6(a) => a.is_loopback() || a.to_ipv4_mapped().is_some_and(|m| m.is_loopback()),
    };
    protected_mode && !acl_required && !local
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl() -> Acl {
        Acl { data: Some("data-pw".into()), admin_user: "root".into(), admin: Some("admin-pw".into()) }
    }

    fn a(v: &[&str]) -> Vec<Vec<u8>> {
        v.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn auth_forms_and_users() {
        let acl = acl();
        assert_eq!(acl.auth(&a(&["data-pw"])), Ok(User::Data));
        assert_eq!(acl.auth(&a(&["default", "data-pw"])), Ok(User::Data));
        assert_eq!(acl.auth(&a(&["root", "admin-pw"])), Ok(User::Admin));
        for bad in [&["admin-pw"][..], &["root", "data-pw"], &["default", "admin-pw"], &["admin", "admin-pw"]]
        {
            assert_eq!(acl.auth(&a(bad)), Err(Value::err(WRONGPASS)), "{bad:?}");
        }
        assert_eq!(acl.initial(), User::None);
        let open = Acl::default();
        assert_eq!(open.initial(), User::Admin);
        assert_eq!(open.auth(&a(&["x"])), Err(Value::err(AUTH_WITHOUT_PASSWORD)));
    }

    /// The data user runs data commands and gets NOPERM for admin ones; nobody runs an
    /// internal command on the client port; the node channel runs internal commands only.
    #[test]
    fn permissions_by_user_and_class() {
        let acl = acl();
        let ok = |u, name: &str| acl.check(u, class(name), name).is_none();
        assert!(ok(User::Data, "GET") && ok(User::Admin, "GET") && ok(User::None, "AUTH"));
        assert!(!ok(User::None, "GET"));
        for admin_cmd in ["FLOTILLA.MEMBER", "FLOTILLA.TRANSFER", "FLOTILLA.REGISTER", "FLOTILLA.UNREGISTER"]
        {
            assert!(ok(User::Admin, admin_cmd), "{admin_cmd}");
            let e = acl.check(User::Data, class(admin_cmd), admin_cmd).unwrap();
            assert!(matches!(&e, Value::Error(m) if m.starts_with("NOPERM User default")), "{e:?}");
        }
        for u in [User::None, User::Data, User::Admin] {
            let e = acl.check(u, Class::Internal, "FLOTILLA.LOCAL").unwrap();
            assert!(matches!(&e, Value::Error(m) if m.starts_with("NOPERM")), "{u:?}: {e:?}");
        }
        assert!(ok(User::Node(2), "FLOTILLA.LOCAL"));
        for other in ["GET", "AUTH", "FLOTILLA.MEMBER"] {
            assert!(!ok(User::Node(2), other), "{other}");
        }
    }

    /// Protected mode: without a password only loopback clients are served.
    #[test]
    fn protected_mode_refuses_only_remote_clients_without_password() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for local in ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"] {
            assert!(!protected_mode_refuses(true, false, ip(local)), "{local}");
        }
        for remote in ["10.0.0.7", "192.168.1.2", "::ffff:10.0.0.7", "fe80::1", "0.0.0.0"] {
            assert!(protected_mode_refuses(true, false, ip(remote)), "{remote}");
            assert!(!protected_mode_refuses(true, true, ip(remote)), "a password is set: {remote}");
            assert!(!protected_mode_refuses(false, false, ip(remote)), "protected mode off: {remote}");
        }
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert!(!format!("{:?}", acl()).contains("pw"));
        assert!(s.matches(b"hunter2") && !s.matches(b"hunter") && !s.matches(b"hunter22"));
    }
}
