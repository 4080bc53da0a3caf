//! Log entries, commands and their outcomes.

use std::fmt;

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::ids::{ClientId, Revision, Uid};
use crate::object::{Kind, Object, ObjectKey};
use crate::validation::FieldErrors;

/// The most requests one entry may carry.
pub const ENTRY_REQUESTS_MAX: usize = 4096;
/// The most commands one atomic batch may hold.
pub const BATCH_COMMANDS_MAX: usize = 1024;

/// One Raft log entry: the requests the leader batched, stamped with the proposer's clock.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
pub struct Entry {
    /// Milliseconds since the epoch, read by the proposer. The state machine's clock never
    /// goes back: it is the largest timestamp applied so far.
    pub timestamp_ms: i64,
    /// The requests, applied in order.
    pub requests: Vec<Request>,
}

/// One client's command with the id and serial that deduplicate its retries.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
pub struct Request {
    /// Who proposed it.
    pub client: ClientId,
    /// The client's serial number for this request; 0 opts out of deduplication.
    pub serial: u64,
    /// What to do.
    pub command: Command,
}

/// Preconditions a write may carry (compare-and-set).
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
pub struct Preconditions {
    /// The object must have this uid.
    pub uid: Option<Uid>,
    /// The object must be at this revision.
    pub resource_version: Option<Revision>,
}

/// A change to the cluster state.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
pub enum Command {
    /// Create an object; fails if one of that kind, namespace and name exists.
    Create(Object),
    /// Replace an object's spec and user metadata (labels, annotations, owner references,
    /// finalizers). Its status is kept. An expected `metadata.resourceVersion` in the object
    /// makes it a compare-and-set.
    Update(Object),
    /// Replace an object's status only. An expected `metadata.resourceVersion` in the object
    /// makes it a compare-and-set.
    UpdateStatus(Object),
    /// Delete an object: at once, or gracefully (see [`crate::state`]).
    Delete {
        /// What to delete.
        key: ObjectKey,
        /// For pods: overrides `spec.terminationGracePeriodSeconds`; 0 deletes now.
        grace_period_seconds: Option<i64>,
        /// Conditions the object must meet.
        preconditions: Preconditions,
    },
    /// Bind an unbound pod to a node (sets `spec.nodeName`).
    Bind {
        /// The pod's namespace.
        namespace: String,
        /// The pod's name.
        name: String,
        /// The node.
        node: String,
        /// Conditions the pod must meet.
        preconditions: Preconditions,
    },
    /// Apply all commands or none.
    #[cfg_attr(feature = "arbitrary", proptest(skip))]
    Batch(Vec<Command>),
    /// Create the object, or update it when one of its kind, namespace and name exists (what
    /// `orchctl apply` sends): decided when the entry applies, so two appliers cannot race
    /// between a read and a write. As an update, an expected `metadata.resourceVersion` makes
    /// it a compare-and-set.
    Apply(Object),
}

/// What happened to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
pub enum Action {
    /// Created.
    Created,
    /// Changed.
    Updated,
    /// The write changed nothing; no event was emitted and the revision did not move.
    Unchanged,
    /// Graceful deletion started or continues (`deletionTimestamp` is set).
    Deleting,
    /// Removed from the state.
    Deleted,
}

/// The effect of a command on one object.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
pub struct Change {
    /// The object.
    pub key: ObjectKey,
    /// Its uid.
    pub uid: Uid,
    /// Its revision after the command.
    pub revision: Revision,
    /// What happened.
    pub action: Action,
}

/// A successful command.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
pub struct Success {
    /// The index of the entry that applied it.
    pub revision: Revision,
    /// One change per object touched, in order.
    pub changes: Vec<Change>,
}

/// A rejected command. Rejections are outcomes, identical on every replica.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode, Serialize, Deserialize, thiserror::Error)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
pub enum ApplyError {
    /// The object breaks a validation rule.
    #[error("{kind} {name:?} is invalid: {errors}")]
    Invalid {
        /// Its kind.
        kind: Kind,
        /// Its name.
        name: String,
        /// What is wrong.
        errors: FieldErrors,
    },
    /// An object with that key exists.
    #[error("{key} already exists")]
    AlreadyExists {
        /// The key.
        key: ObjectKey,
    },
    /// No object (or namespace) with that key exists.
    #[error("{key} not found")]
    NotFound {
        /// The key.
        key: ObjectKey,
    },
    /// A precondition failed (the object changed since it was read).
    #[error("Operation cannot be fulfilled on {key}: {reason}")]
    Conflict {
        /// The key.
        key: ObjectKey,
        /// Why.
        reason: String,
    },
    /// The command is not allowed in the current state.
    #[error("{key} is forbidden: {reason}")]
    Forbidden {
        /// The key.
        key: ObjectKey,
        /// Why.
        reason: String,
    },
    /// The command breaks a limit or a rule of the command set itself.
    #[error("bad request: {reason}")]
    BadRequest {
        /// Why.
        reason: String,
    },
    /// The serial is older than the client's deduplication window: the first outcome is
    /// forgotten, so the state machine cannot tell whether it was applied.
    #[error("request {serial} of client {client} is older than its deduplication window; its outcome is unknown")]
    StaleRequest {
        /// The client.
        client: ClientId,
        /// The serial.
        serial: u64,
    },
    /// A command of an atomic batch failed; nothing of the batch was applied.
    #[cfg_attr(feature = "arbitrary", proptest(skip))]
    #[error("batch command {index}: {error}")]
    Batch {
        /// The 0-based position of the failed command.
        index: u32,
        /// Its error.
        error: Box<ApplyError>,
    },
}

/// The outcome of one request.
pub type Outcome = Result<Success, ApplyError>;

impl fmt::Display for Entry {
    /// `3 requests at 2026-11-27T23:59:43Z`, for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.requests.len();
        let time = crate::time::Time::from_millis(self.timestamp_ms);
        write!(f, "{n} request{} at {time}", if n == 1 { "" } else { "s" })
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Created => "created",
            Action::Updated => "configured",
            Action::Unchanged => "unchanged",
            Action::Deleting => "deleting",
            Action::Deleted => "deleted",
        })
    }
}

impl Command {
    /// The number of commands, counting each command of a batch.
    pub fn len(&self) -> usize {
        match self {
            Command::Batch(cmds) => cmds.iter().map(Command::len).sum(),
            _ => 1,
        }
    }

    /// True for an empty batch.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
