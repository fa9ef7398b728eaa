//! Identifiers shared by every part of the Raft core: nodes, replicas, roles.
//!
//! Owns plain value types only; never any behaviour that needs state.

/// Identifies a node (a process/machine) in the cluster. `0` is never a valid node id.
pub type NodeId = u64;

/// Identifies one replica of one group. Unique within a group and never reused there, so a
/// node removed, wiped and re-added comes back under a new replica id and cannot vote twice
/// in one term. `0` means "none".
pub type ReplicaId = u64;

/// The "no replica" sentinel for [`ReplicaId`].
pub const NO_REPLICA: ReplicaId = 0;

/// A member of a group: the node it lives on and its replica id in the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Replica {
    /// The node that hosts the replica.
    pub node: NodeId,
    /// The replica's id within the group.
    pub id: ReplicaId,
}

impl Replica {
    /// A replica with the given node and replica ids.
    pub const fn new(node: NodeId, id: ReplicaId) -> Self {
        Replica { node, id }
    }
}

/// The role a replica plays in its group at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Probing whether an election could be won, without raising the term (PreVote).
    PreCandidate,
    /// Campaigning for votes in a new term.
    Candidate,
    /// Leads the group in the current term.
    Leader,
}

impl Role {
    /// The role's name in lower case (`"leader"`, `"follower"`, `"candidate"`,
    /// `"precandidate"`), for reports and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Follower => "follower",
            Role::PreCandidate => "precandidate",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
        }
    }
}
