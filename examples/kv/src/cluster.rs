//! The cluster as the admin and rebalance tools see it, and the operations they run:
//! [`Admin`] talks RESP to the nodes' client ports (`FLOTILLA.*` commands), builds a
//! [`ClusterView`] from every node's status, and adds, removes and moves replicas and
//! leaders. Every step is retried (the server already follows leader hints within its own
//! budget) until the tool's own deadline.
//!
//! Owns the order of steps (a replica is added as a learner, promoted once caught up, and
//! only then is an old one removed; a leader is moved away before its replica is removed).
//! Never talks to the engine directly.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::acl::Secret;
use crate::client::{Client, ClientError};
use crate::node::NodeStatus;
use crate::resp::Value;
use crate::sm::META_GROUP;

/// Why an admin operation failed.
#[derive(Debug, Error)]
pub enum AdminError {
    /// A node could not be reached.
    #[error("node at {addr}: {error}")]
    Unreachable {
        /// Its client address.
        addr: String,
        /// Why.
        error: ClientError,
    },
    /// A node refused the user or password, requires one, or the user may not run the
    /// command (`NOPERM`).
    #[error("node at {addr}: authentication failed: {msg}")]
    Auth {
        /// Its client address.
        addr: String,
        /// The server's message.
        msg: String,
    },
    /// A command failed for good.
    #[error("{what}: {msg}")]
    Refused {
        /// The step.
        what: String,
        /// The server's error.
        msg: String,
    },
    /// A step kept failing until the deadline.
    #[error("{what}: gave up after {secs} s: {msg}")]
    Timeout {
        /// The step.
        what: String,
        /// The deadline in seconds.
        secs: u64,
        /// The last error.
        msg: String,
    },
    /// The cluster's state does not allow the operation.
    #[error("{0}")]
    Invalid(String),
}

/// One group as the cluster sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupView {
    /// Group id.
    pub group: u64,
    /// The leader's node (from the replica claiming leadership in the highest term).
    pub leader: Option<u64>,
    /// That term.
    pub term: u64,
    /// Voters' nodes.
    pub voters: Vec<u64>,
    /// Learners' nodes.
    pub learners: Vec<u64>,
    /// Commit index at the leader.
    pub commit: u64,
    /// Largest follower lag at the leader.
    pub max_lag: u64,
}

/// The whole cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// Node id -> client address.
    pub nodes: BTreeMap<u64, String>,
    /// Status of each reachable node.
    pub status: BTreeMap<u64, NodeStatus>,
    /// Nodes that could not be reached.
    pub unreachable: BTreeSet<u64>,
    /// Groups by id.
    pub groups: BTreeMap<u64, GroupView>,
}

impl ClusterView {
    /// Shard groups (not the meta group).
    pub fn shard_groups(&self) -> impl Iterator<Item = &GroupView> {
        self.groups.values().filter(|g| g.group != META_GROUP)
    }

    /// Leaders per node (shards only; nodes without any count 0).
    pub fn leaders_per_node(&self) -> BTreeMap<u64, usize> {
        let mut m: BTreeMap<u64, usize> = self.nodes.keys().map(|&n| (n, 0)).collect();
        for g in self.shard_groups() {
            if let Some(l) = g.leader {
                *m.entry(l).or_default() += 1;
            }
        }
        m
    }

    /// Replicas (voters and learners) per node (shards only).
    pub fn replicas_per_node(&self) -> BTreeMap<u64, usize> {
        let mut m: BTreeMap<u64, usize> = self.nodes.keys().map(|&n| (n, 0)).collect();
        for g in self.shard_groups() {
            for n in g.voters.iter().chain(&g.learners) {
                *m.entry(*n).or_default() += 1;
            }
        }
        m
    }

    /// A table for humans.
    pub fn render(&self) -> String {
        let mut s = String::new();
        s.push_str("NODE  CLIENT                 STATE        LEADERS  REPLICAS\n");
        let (l, r) = (self.leaders_per_node(), self.replicas_per_node());
        for (id, addr) in &self.nodes {
            let state = if self.unreachable.contains(id) { "unreachable" } else { "up" };
            s.push_str(&format!(
                "{id:<5} {addr:<22} {state:<12} {:<8} {}\n",
                l.get(id).copied().unwrap_or(0),
                r.get(id).copied().unwrap_or(0)
            ));
        }
        s.push_str("\nGROUP   LEADER  TERM   COMMIT     MAXLAG  VOTERS        LEARNERS\n");
        for g in self.groups.values() {
            let name = if g.group == META_GROUP { "meta".to_string() } else { g.group.to_string() };
            s.push_str(&format!(
                "{name:<7} {:<7} {:<6} {:<10} {:<7} {:<13} {:?}\n",
                g.leader.map(|l| l.to_string()).unwrap_or_else(|| "-".into()),
                g.term,
                g.commit,
                g.max_lag,
                format!("{:?}", g.voters),
                g.learners
            ));
        }
        s
    }
}

/// `flotilla-admin status --json`: the cluster view as one JSON document. Field names
/// are stable (new fields may be added, none renamed or removed).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StatusDoc {
    /// Every node of the directory, by id.
    pub nodes: Vec<NodeDoc>,
    /// The meta group (the directory's Raft group).
    pub meta: Option<GroupDoc>,
    /// Every shard group, by group id.
    pub shards: Vec<GroupDoc>,
}

/// A node in [`StatusDoc`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeDoc {
    /// Node id.
    pub id: u64,
    /// Client address (ip:port).
    pub client: String,
    /// `up`, or `unreachable` (its status could not be read).
    pub state: String,
    /// Shards it leads.
    pub leaders: usize,
    /// Shard replicas it holds (voters and learners).
    pub replicas: usize,
}

/// A group in [`StatusDoc`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GroupDoc {
    /// Raft group id.
    pub group: u64,
    /// Leader's node, `null` when no reachable replica claims leadership.
    pub leader: Option<u64>,
    /// The term of that leader (else the highest term seen).
    pub term: u64,
    /// Commit index (at the leader when there is one).
    pub commit: u64,
    /// Voters' nodes.
    pub voters: Vec<u64>,
    /// Learners' nodes.
    pub learners: Vec<u64>,
    /// Each follower's lag behind the leader, in entries (empty without a leader).
    pub lag: Vec<LagDoc>,
    /// The largest of those lags.
    pub max_lag: u64,
}

/// One follower's lag in [`GroupDoc`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LagDoc {
    /// The follower's node.
    pub node: u64,
    /// Entries behind the leader.
    pub entries: u64,
}

impl ClusterView {
    /// The view as `status --json` prints it.
    pub fn doc(&self) -> StatusDoc {
        let (l, r) = (self.leaders_per_node(), self.replicas_per_node());
        let nodes = self
            .nodes
            .iter()
            .map(|(&id, addr)| NodeDoc {
                id,
                client: addr.clone(),
                state: if self.unreachable.contains(&id) { "unreachable" } else { "up" }.into(),
                leaders: l.get(&id).copied().unwrap_or(0),
                replicas: r.get(&id).copied().unwrap_or(0),
            })
            .collect();
        let group = |g: &GroupView| {
            let lag = g
                .leader
                .and_then(|n| self.status.get(&n))
                .and_then(|s| s.replicas.iter().find(|x| x.group == g.group))
                .map(|x| x.lag.iter().map(|&(node, entries)| LagDoc { node, entries }).collect())
                .unwrap_or_default();
            GroupDoc {
                group: g.group,
                leader: g.leader,
                term: g.term,
                commit: g.commit,
                voters: g.voters.clone(),
                learners: g.learners.clone(),
                lag,
                max_lag: g.max_lag,
            }
        };
        StatusDoc {
            nodes,
            meta: self.groups.get(&META_GROUP).map(group),
            shards: self.shard_groups().map(group).collect(),
        }
    }
}

/// A connection-per-call admin client. It authenticates as the admin user
/// (`AUTH <user> <password>`) when it has a password.
#[derive(Debug, Clone)]
pub struct Admin {
    /// The admin user's name (default `admin`).
    pub user: String,
    /// The admin user's password, if the cluster has one.
    pub password: Option<Secret>,
    /// How long each step is retried.
    pub step_timeout: Duration,
}

/// One node's result of an operation run on every node: its id, and how it went.
pub type NodeResult = (u64, Result<(), AdminError>);

/// The options both tools (`flotilla-admin`, `flotilla-rebalance`) take to reach the
/// cluster as the admin user (flattened into each tool's arguments).
#[derive(Debug, Clone, clap::Args)]
pub struct ToolArgs {
    /// Client address (ip:port) of any node of the cluster.
    #[arg(long)]
    pub seed: String,
    /// The admin user's name.
    #[arg(long, default_value = "admin")]
    pub user: String,
    /// A file holding the admin user's password (default: the FLOTILLA_ADMIN_PASSWORD
    /// environment variable). Never on the command line.
    #[arg(long)]
    pub password_file: Option<std::path::PathBuf>,
    /// Seconds each step is retried before giving up (at least 1).
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
}

impl ToolArgs {
    /// The admin client these options describe: the password from `--password-file`, else
    /// `FLOTILLA_ADMIN_PASSWORD`, else none. An unreadable or empty password is an error
    /// (a usage error for the tools).
    pub fn admin(&self) -> Result<Admin, String> {
        let password = crate::acl::tool_password(
            self.password_file.as_deref(),
            std::env::var(crate::config::ADMIN_PASSWORD_ENV).ok(),
        )?;
        let mut a = Admin::new(password);
        a.user = self.user.clone();
        a.step_timeout = Duration::from_secs(self.timeout.max(1));
        Ok(a)
    }
}

impl AdminError {
    /// The tools' exit code for it: 3 a node could not be reached, 4 authentication
    /// failed, 1 anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            AdminError::Unreachable { .. } => 3,
            AdminError::Auth { .. } => 4,
            _ => 1,
        }
    }
}

fn is_retryable(msg: &str) -> bool {
    msg.starts_with("TRYAGAIN") || msg.starts_with("FLOTILLA.RETRY") || msg.starts_with("FLOTILLA.REDIRECT")
}

impl Admin {
    /// An admin client for the user `admin` with `password`.
    pub fn new(password: Option<Secret>) -> Admin {
        Admin { user: "admin".into(), password, step_timeout: Duration::from_secs(30) }
    }

    /// A connection to the node at `addr`, authenticated as the admin user.
    pub fn connect(&self, addr: &str) -> Result<Client, AdminError> {
        let unreachable = |error| AdminError::Unreachable { addr: addr.to_string(), error };
        let mut c = Client::connect(addr, Duration::from_secs(2)).map_err(unreachable)?;
        c.set_timeout(Duration::from_secs(15)).map_err(unreachable)?;
        if let Some(p) = &self.password {
            if let Value::Error(msg) =
                c.call(&["AUTH", self.user.as_str(), p.expose()]).map_err(unreachable)?
            {
                return Err(AdminError::Auth { addr: addr.to_string(), msg });
            }
        }
        Ok(c)
    }

    /// Sends one command to the node at `addr`.
    pub fn call(&self, addr: &str, args: &[&str]) -> Result<Value, AdminError> {
        let unreachable = |error| AdminError::Unreachable { addr: addr.to_string(), error };
        let mut c = self.connect(addr)?;
        let v = c.call(args).map_err(unreachable)?;
        if let Value::Error(msg) = &v {
            if msg.starts_with("NOAUTH") || msg.starts_with("WRONGPASS") || msg.starts_with("NOPERM") {
                return Err(AdminError::Auth { addr: addr.to_string(), msg: msg.clone() });
            }
        }
        Ok(v)
    }

    /// Runs `args` at `addr` until it succeeds, fails for good, or the step timeout.
    pub fn retry(&self, addr: &str, what: &str, args: &[&str]) -> Result<Value, AdminError> {
        let deadline = Instant::now() + self.step_timeout;
        loop {
            let last = match self.call(addr, args) {
                Ok(Value::Error(msg)) if is_retryable(&msg) => msg,
                Ok(Value::Error(msg)) => return Err(AdminError::Refused { what: what.into(), msg }),
                Ok(v) => return Ok(v),
                Err(e @ AdminError::Auth { .. }) => return Err(e),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(AdminError::Timeout {
                    what: what.into(),
                    secs: self.step_timeout.as_secs(),
                    msg: last,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The status of the node at `addr`.
    pub fn node_status(&self, addr: &str) -> Result<NodeStatus, AdminError> {
        match self.call(addr, &["FLOTILLA.STATUS"])? {
            Value::Bulk(Some(b)) => serde_json::from_slice(&b)
                .map_err(|e| AdminError::Refused { what: "status".into(), msg: e.to_string() }),
            Value::Error(msg) => Err(AdminError::Refused { what: "status".into(), msg }),
            v => Err(AdminError::Refused { what: "status".into(), msg: format!("unexpected reply {v:?}") }),
        }
    }

    /// The cluster as seen from every node in the directory of the node at `seed`.
    pub fn view(&self, seed: &str) -> Result<ClusterView, AdminError> {
        let first = self.node_status(seed)?;
        let mut v = ClusterView {
            nodes: first.directory.iter().map(|(&id, i)| (id, i.client.clone())).collect(),
            ..Default::default()
        };
        v.nodes.entry(first.node).or_insert_with(|| seed.to_string());
        let ids: Vec<(u64, String)> = v.nodes.iter().map(|(a, b)| (*a, b.clone())).collect();
        for (id, addr) in ids {
            let st = if id == first.node { Ok(first.clone()) } else { self.node_status(&addr) };
            match st {
                Ok(s) => {
                    v.status.insert(id, s);
                }
                Err(AdminError::Auth { addr, msg }) => return Err(AdminError::Auth { addr, msg }),
                Err(_) => {
                    v.unreachable.insert(id);
                }
            }
        }
        for s in v.status.values() {
            for r in &s.replicas {
                let g = v
                    .groups
                    .entry(r.group)
                    .or_insert_with(|| GroupView { group: r.group, ..Default::default() });
                let claims = r.role == "leader";
                if claims && r.term >= g.term {
                    g.leader = Some(s.node);
                    g.term = r.term;
                    g.voters = r.voters.clone();
                    g.learners = r.learners.clone();
                    g.commit = r.commit;
                    g.max_lag = r.lag.iter().map(|x| x.1).max().unwrap_or(0);
                } else if g.leader.is_none() && r.term >= g.term {
                    g.term = r.term;
                    g.voters = r.voters.clone();
                    g.learners = r.learners.clone();
                    g.commit = r.commit;
                }
            }
        }
        Ok(v)
    }

    /// Registers a new node (reached at `new_addr`) through the cluster at `seed`, makes it
    /// a voter of the meta group, and adds it to every shard that has fewer than `replicas`
    /// voters. Returns the new node's id.
    pub fn add_server(&self, seed: &str, new_addr: &str, replicas: usize) -> Result<u64, AdminError> {
        let st = self.node_status(new_addr)?;
        let id = st.node;
        let seed_shards = self.node_status(seed)?.shards;
        if st.shards != seed_shards {
            return Err(AdminError::Invalid(format!(
                "node {id} at {new_addr} is configured with {} shards, the cluster with {seed_shards}",
                st.shards
            )));
        }
        self.retry(
            seed,
            &format!("register node {id}"),
            &["FLOTILLA.REGISTER", &id.to_string(), &st.info.peer, &st.info.client],
        )?;
        self.add_replica(seed, META_GROUP, id)?;
        let view = self.view(seed)?;
        for g in view.shard_groups() {
            if g.voters.len() < replicas && !g.voters.contains(&id) {
                self.add_replica(seed, g.group, id)?;
            }
        }
        Ok(id)
    }

    /// Adds a voter on `node` to `group`: learner, catch up, promote. Idempotent: each
    /// round starts from the current layout, and a step refused because the layout moved
    /// on (already a member, not a learner) starts another round.
    pub fn add_replica(&self, seed: &str, group: u64, node: u64) -> Result<(), AdminError> {
        let (gs, ns) = (group.to_string(), node.to_string());
        let mut last = None;
        for _ in 0..5 {
            let g = self.view(seed)?.groups.get(&group).cloned().unwrap_or_default();
            if g.voters.contains(&node) {
                return Ok(());
            }
            let r = if g.learners.contains(&node) {
                self.retry(
                    seed,
                    &format!("promote {node} in group {group}"),
                    &["FLOTILLA.MEMBER", "promote", &gs, &ns],
                )
            } else {
                self.retry(
                    seed,
                    &format!("add learner {node} to group {group}"),
                    &["FLOTILLA.MEMBER", "addlearner", &gs, &ns],
                )
            };
            match r {
                Err(AdminError::Refused { msg, .. }) if msg.contains("invalid change") => last = Some(msg),
                Err(e) => return Err(e),
                Ok(_) => {}
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(AdminError::Refused {
            what: format!("add node {node} to group {group}"),
            msg: last.unwrap_or_else(|| "layout kept changing".into()),
        })
    }

    /// Removes `node`'s replica of `group`, moving the leadership away first.
    pub fn remove_replica(&self, seed: &str, group: u64, node: u64) -> Result<(), AdminError> {
        let g = self.view(seed)?.groups.get(&group).cloned().unwrap_or_default();
        if !g.voters.contains(&node) && !g.learners.contains(&node) {
            return Ok(());
        }
        if g.leader == Some(node) {
            let Some(&to) = g.voters.iter().find(|&&v| v != node) else {
                return Err(AdminError::Invalid(format!("group {group} has no other voter to lead it")));
            };
            self.transfer(seed, group, to)?;
        }
        self.retry(
            seed,
            &format!("remove {node} from group {group}"),
            &["FLOTILLA.MEMBER", "remove", &group.to_string(), &node.to_string()],
        )?;
        Ok(())
    }

    /// Moves `group`'s leadership to `to` (waits until it leads).
    pub fn transfer(&self, seed: &str, group: u64, to: u64) -> Result<(), AdminError> {
        self.retry(
            seed,
            &format!("transfer group {group} to node {to}"),
            &["FLOTILLA.TRANSFER", &group.to_string(), &to.to_string()],
        )?;
        Ok(())
    }

    /// Makes every node of the directory (as the node at `seed` knows it) re-read its
    /// certificate files (`FLOTILLA.RELOADCERTS`). Every node is tried, whatever happened
    /// at the others; returns each node's result, in node order.
    pub fn reload_certs(&self, seed: &str) -> Result<Vec<NodeResult>, AdminError> {
        let first = self.node_status(seed)?;
        let mut nodes: BTreeMap<u64, String> =
            first.directory.iter().map(|(&id, i)| (id, i.client.clone())).collect();
        nodes.insert(first.node, seed.to_string());
        Ok(nodes
            .into_iter()
            .map(|(id, addr)| {
                let r = match self.call(&addr, &["FLOTILLA.RELOADCERTS"]) {
                    Ok(Value::Error(msg)) => {
                        Err(AdminError::Refused { what: format!("reload certificates of node {id}"), msg })
                    }
                    Ok(_) => Ok(()),
                    Err(e) => Err(e),
                };
                (id, r)
            })
            .collect())
    }

    /// Moves every shard led by `from` to `to`; returns how many moved.
    pub fn transfer_all(&self, seed: &str, from: u64, to: u64) -> Result<usize, AdminError> {
        let v = self.view(seed)?;
        let mut n = 0;
        for g in v.shard_groups().filter(|g| g.leader == Some(from)) {
            if !g.voters.contains(&to) {
                return Err(AdminError::Invalid(format!("node {to} is not a voter of group {}", g.group)));
            }
            self.transfer(seed, g.group, to)?;
            n += 1;
        }
        Ok(n)
    }

    /// Removes `node` from the cluster: for each shard it holds, adds a replica on the
    /// node with the fewest replicas that lacks one (when there is such a node), moves the
    /// leadership away, removes its replica; then the same for the meta group. The seed
    /// must not be `node`.
    pub fn remove_server(&self, seed: &str, node: u64) -> Result<(), AdminError> {
        let v = self.view(seed)?;
        if !v.nodes.contains_key(&node) {
            return Err(AdminError::Invalid(format!("node {node} is not in the directory")));
        }
        let mut groups: Vec<u64> = v.shard_groups().map(|g| g.group).collect();
        groups.push(META_GROUP);
        for group in groups {
            let v = self.view(seed)?;
            let Some(g) = v.groups.get(&group) else { continue };
            if !g.voters.contains(&node) && !g.learners.contains(&node) {
                continue;
            }
            if group != META_GROUP && g.voters.contains(&node) {
                let counts = v.replicas_per_node();
                let spare = v
                    .nodes
                    .keys()
                    .filter(|n| **n != node && !g.voters.contains(n) && !v.unreachable.contains(n))
                    .min_by_key(|n| counts.get(n).copied().unwrap_or(0));
                if let Some(&spare) = spare {
                    self.add_replica(seed, group, spare)?;
                }
            }
            self.remove_replica(seed, group, node)?;
        }
        self.retry(seed, &format!("unregister node {node}"), &["FLOTILLA.UNREGISTER", &node.to_string()])?;
        Ok(())
    }
}

/// One step of a rebalance plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    /// Move a shard's leadership.
    Leader {
        /// Group.
        group: u64,
        /// Current leader.
        from: u64,
        /// New leader.
        to: u64,
    },
    /// Move a shard replica: add a voter on `to` (learner, catch up, promote), then remove
    /// the one on `from`.
    Replica {
        /// Group.
        group: u64,
        /// Node losing the replica.
        from: u64,
        /// Node gaining it.
        to: u64,
    },
}

impl std::fmt::Display for Move {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Move::Leader { group, from, to } => write!(f, "leader  group {group}: node {from} -> node {to}"),
            Move::Replica { group, from, to } => write!(f, "replica group {group}: node {from} -> node {to}"),
        }
    }
}

/// Plans replica moves so every live node holds within one replica of every other
/// (shard groups only; unreachable nodes neither give nor take). Applies the moves to
/// `view` (the caller plans leaders on the result).
pub fn plan_replicas(view: &mut ClusterView) -> Vec<Move> {
    let live: Vec<u64> = view.nodes.keys().copied().filter(|n| !view.unreachable.contains(n)).collect();
    let mut moves = Vec::new();
    for _ in 0..10_000 {
        let counts = view.replicas_per_node();
        let by = |n: &u64| counts.get(n).copied().unwrap_or(0);
        let (Some(&max), Some(&min)) = (live.iter().max_by_key(|n| by(n)), live.iter().min_by_key(|n| by(n)))
        else {
            break;
        };
        if by(&max) <= by(&min) + 1 {
            break;
        }
        // A group on `max` (as a voter) without `min`; prefer one `max` does not lead.
        let mut cands: Vec<&GroupView> = view
            .shard_groups()
            .filter(|g| g.voters.contains(&max) && !g.voters.contains(&min) && !g.learners.contains(&min))
            .collect();
        cands.sort_by_key(|g| g.leader == Some(max));
        let Some(group) = cands.first().map(|g| g.group) else { break };
        moves.push(Move::Replica { group, from: max, to: min });
        if let Some(g) = view.groups.get_mut(&group) {
            g.voters.retain(|&n| n != max);
            g.voters.push(min);
            if g.leader == Some(max) {
                g.leader = g.voters.first().copied();
            }
        }
    }
    moves
}

/// Plans leadership transfers so leader counts per live node differ by at most one where
/// the membership allows it.
pub fn plan_leaders(view: &mut ClusterView) -> Vec<Move> {
    let live: Vec<u64> = view.nodes.keys().copied().filter(|n| !view.unreachable.contains(n)).collect();
    let mut moves = Vec::new();
    for _ in 0..10_000 {
        let counts = view.leaders_per_node();
        let by = |n: &u64| counts.get(n).copied().unwrap_or(0);
        // The most loaded node, and among groups it leads one whose least-loaded voter
        // has at least two fewer leaders.
        let mut order = live.clone();
        order.sort_by_key(|n| std::cmp::Reverse(by(n)));
        let mut found = None;
        'outer: for &from in &order {
            for g in view.shard_groups().filter(|g| g.leader == Some(from)) {
                if let Some(&to) = g
                    .voters
                    .iter()
                    .filter(|v| live.contains(v) && by(v) + 1 < by(&from))
                    .min_by_key(|v| by(v))
                {
                    found = Some((g.group, from, to));
                    break 'outer;
                }
            }
        }
        let Some((group, from, to)) = found else { break };
        moves.push(Move::Leader { group, from, to });
        if let Some(g) = view.groups.get_mut(&group) {
            g.leader = Some(to);
        }
    }
    moves
}

impl Admin {
    /// Carries out one move.
    pub fn apply_move(&self, seed: &str, m: Move) -> Result<(), AdminError> {
        match m {
            Move::Leader { group, to, .. } => self.transfer(seed, group, to),
            Move::Replica { group, from, to } => {
                self.add_replica(seed, group, to)?;
                self.remove_replica(seed, group, from)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(nodes: &[u64], groups: &[(u64, Option<u64>, &[u64])]) -> ClusterView {
        let mut v = ClusterView::default();
        for &n in nodes {
            v.nodes.insert(n, format!("127.0.0.1:{n}"));
        }
        for &(g, leader, voters) in groups {
            v.groups.insert(g, GroupView { group: g, leader, voters: voters.to_vec(), ..Default::default() });
        }
        v
    }

    fn spread(m: &BTreeMap<u64, usize>) -> usize {
        m.values().max().unwrap() - m.values().min().unwrap()
    }

    #[test]
    fn leaders_all_on_one_node_are_evened() {
        let gs: Vec<(u64, Option<u64>, &[u64])> =
            (0..10).map(|g| (1000 + g, Some(1), &[1u64, 2, 3][..])).collect();
        let mut v = view(&[1, 2, 3], &gs);
        let moves = plan_leaders(&mut v);
        assert_eq!(moves.len(), 6, "{moves:?}");
        assert!(spread(&v.leaders_per_node()) <= 1);
        assert!(plan_leaders(&mut v).is_empty(), "a balanced view plans nothing");
    }

    #[test]
    fn an_empty_node_gets_its_share_of_replicas_and_none_is_lost() {
        let gs: Vec<(u64, Option<u64>, &[u64])> =
            (0..8).map(|g| (1000 + g, Some(1), &[1u64, 2, 3][..])).collect();
        let mut v = view(&[1, 2, 3, 4], &gs);
        let moves = plan_replicas(&mut v);
        assert!(spread(&v.replicas_per_node()) <= 1, "{:?}", v.replicas_per_node());
        assert_eq!(v.replicas_per_node()[&4], 6);
        assert!(v.shard_groups().all(|g| g.voters.len() == 3), "every group keeps 3 voters");
        assert!(moves.iter().all(|m| matches!(m, Move::Replica { to: 4, .. })));
        let lm = plan_leaders(&mut v);
        assert!(spread(&v.leaders_per_node()) <= 1, "{lm:?} {:?}", v.leaders_per_node());
    }

    #[test]
    fn unreachable_nodes_are_left_alone() {
        let gs: Vec<(u64, Option<u64>, &[u64])> =
            (0..4).map(|g| (1000 + g, Some(1), &[1u64, 2][..])).collect();
        let mut v = view(&[1, 2, 3], &gs);
        v.unreachable.insert(3);
        assert!(plan_replicas(&mut v).is_empty());
        let moves = plan_leaders(&mut v);
        assert!(moves.iter().all(|m| matches!(m, Move::Leader { to: 2, .. })) && moves.len() == 2);
    }
}
