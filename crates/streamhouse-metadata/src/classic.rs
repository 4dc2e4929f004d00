//! The arguments and answers of Kafka classic consumer groups
//! ([`crate::ClassicGroupStore`]): JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, and what DescribeGroups and ListGroups show.

/// The most bytes of protocol metadata or assignment one member may
/// store.
pub const MAX_MEMBER_BYTES: usize = 1 << 20;

/// The most bytes of state (members with their metadata and assignments)
/// one classic group may hold; a join that would exceed it is refused.
pub const MAX_GROUP_BYTES: usize = 32 << 20;

/// The most protocols one member may offer (Kafka clients offer one to
/// three assignors).
pub const MAX_PROTOCOLS: usize = 64;

/// The longest member id, instance id, client id, client host, protocol
/// type or protocol name, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// What each stored protocol, member or assignment counts for beyond its
/// bytes (the lengths and fields around them), so that many empty entries
/// still count.
pub const ENTRY_OVERHEAD_BYTES: usize = 64;

/// The protocol type of Kafka consumers (the only one whose subscriptions
/// the store reads, for OffsetDelete).
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// A JoinGroup, sent again unchanged while the answer is
/// [`JoinProgress::Waiting`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassicJoin {
    pub group_id: String,
    /// Never empty: the caller generates one for a member that sent none.
    pub member_id: String,
    /// True when the client sent no member id and `member_id` was just
    /// generated for it (a static member then replaces the member of its
    /// instance id).
    pub new_member: bool,
    /// True when this is the same join sent again after a
    /// [`JoinProgress::Waiting`]: the member is then no longer admitted
    /// as new if it was removed meanwhile (it left, or its session
    /// expired), but refused with `UnknownMember`.
    pub repeat: bool,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    /// How long the first join phase of a group without members waits
    /// for more members, extended by as much for each new member that
    /// joins meanwhile, never past the rebalance timeout (Kafka's
    /// `group.initial.rebalance.delay.ms`): consumers starting together
    /// land in one generation, each knowing its topics' partitions. 0
    /// ends it as soon as every member joined.
    pub initial_rebalance_delay_ms: i32,
    pub protocol_type: String,
    /// Protocol names with their metadata, in the member's preference
    /// order.
    pub protocols: Vec<(String, Vec<u8>)>,
}

/// A member of a generation as its leader sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    /// The member's metadata of the chosen protocol.
    pub metadata: Vec<u8>,
}

/// The answer to a JoinGroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JoinProgress {
    /// The join phase has not completed: send the same join again.
    Waiting,
    /// The member is in generation `generation`.
    Joined {
        generation: i32,
        protocol_type: String,
        protocol_name: String,
        leader: String,
        member_id: String,
        /// Every member of the generation for the leader; empty for the
        /// others.
        members: Vec<JoinedMember>,
    },
}

/// A SyncGroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassicSync {
    pub group_id: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// The leader's assignment of every member (empty for the others).
    pub assignments: Vec<(String, Vec<u8>)>,
}

/// The answer to a SyncGroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncProgress {
    /// The leader has not sent the assignments yet: send the same sync
    /// again.
    Waiting,
    /// The member's assignment (empty when the leader gave it none).
    Assigned {
        protocol_type: String,
        protocol_name: String,
        assignment: Vec<u8>,
    },
}

/// The phase of a classic group, named as Kafka names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClassicPhase {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl ClassicPhase {
    /// Kafka's name of the phase (DescribeGroups, ListGroups).
    pub fn name(self) -> &'static str {
        match self {
            ClassicPhase::Empty => "Empty",
            ClassicPhase::PreparingRebalance => "PreparingRebalance",
            ClassicPhase::CompletingRebalance => "CompletingRebalance",
            ClassicPhase::Stable => "Stable",
        }
    }
}

/// A member as DescribeGroups shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassicMemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// The member's metadata of the group's protocol (empty while none is
    /// chosen).
    pub metadata: Vec<u8>,
    pub assignment: Vec<u8>,
}

/// A classic group as DescribeGroups shows it (live members only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassicGroupDescription {
    pub group_id: String,
    pub phase: ClassicPhase,
    pub generation: i32,
    pub protocol_type: String,
    /// The chosen protocol (empty while none is).
    pub protocol_name: String,
    pub leader: Option<String>,
    pub members: Vec<ClassicMemberDescription>,
}

/// A group as ListGroups shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    /// The protocol type (classic groups), or `consumer` for groups of
    /// the server-side protocol and groups with only committed offsets.
    pub protocol_type: String,
    /// `Empty`, `PreparingRebalance`, `CompletingRebalance` or `Stable`.
    pub state: String,
    /// `classic` or `consumer`.
    pub group_type: String,
}
