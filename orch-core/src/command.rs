//! Log entries, commands and their outcomes.

use std::fmt;

use bincode::de::Decoder;
use bincode::error::{AllowedEnumVariants, DecodeError};
use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::codec::Format;
use crate::ids::{ClientId, Revision, Uid};
use crate::object::{Kind, Object, ObjectKey};
use crate::validation::FieldErrors;

/// The most requests one entry may carry.
pub const ENTRY_REQUESTS_MAX: usize = 4096;
/// The most commands one atomic batch may hold.
pub const BATCH_COMMANDS_MAX: usize = 1024;

/// One Raft log entry: the requests the leader batched, stamped with the proposer's clock and
/// the version of the rules they are applied under.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[bincode(decode_context = "Format")]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
pub struct Entry {
    /// Milliseconds since the epoch, read by the proposer. The state machine's clock never
    /// goes back: it is the largest timestamp applied so far.
    pub timestamp_ms: i64,
    /// The version of apply's rules this entry is applied under ([`crate::rules`]): the
    /// proposer's [`crate::rules::RULES_VERSION`]. Since format 4; older entries read as
    /// [`crate::rules::RULES_UNSTAMPED`].
    #[cfg_attr(
        feature = "arbitrary",
        proptest(strategy = "crate::rules::RULES_VERSION_MIN..=crate::rules::RULES_VERSION")
    )]
    pub rules: u16,
    /// The requests, applied in order.
    pub requests: Vec<Request>,
}

impl Entry {
    /// An entry of `requests` at `timestamp_ms`, under this build's rules.
    pub fn new(timestamp_ms: i64, requests: Vec<Request>) -> Self {
        Self { timestamp_ms, rules: crate::rules::RULES_VERSION, requests }
    }
}

impl Default for Entry {
    /// No request, at time 0, under this build's rules.
    fn default() -> Self {
        Self::new(0, Vec::new())
    }
}

/// One client's command with the id and serial that deduplicate its retries.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[bincode(decode_context = "Format")]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
pub struct Request {
    /// Who proposed it.
    pub client: ClientId,
    /// The client's serial number for this request; 0 opts out of deduplication.
    pub serial: u64,
    /// The client's lowest serial still awaiting a reply when it sent this request (at most
    /// `serial`): it has the replies of every serial below, so the deduplication table forgets
    /// their outcomes, and only those (the Raft dissertation's client sessions). Requests may
    /// reach the log in any order. 0: not told (requests of format 1); the table then keeps the
    /// client's last [`crate::sessions::SESSION_OUTCOMES_MAX`] outcomes, as format 1 did. See
    /// [`crate::sessions::ClientSerials`] for the client's side.
    pub acked_below: u64,
    /// The client sent this request before, and that attempt may have been proposed. A
    /// table that no longer knows the client (its session expired) cannot tell whether that
    /// attempt was applied, so it answers [`ApplyError::SessionExpired`] instead of applying
    /// the request; a first attempt (false) was never applied before, so it is applied. Since
    /// format 4; older requests read as first attempts, which is what every request was then.
    pub retry: bool,
    /// What to do.
    pub command: Command,
}

impl Request {
    /// A first attempt that tells the table nothing about the client's replies (`acked_below`
    /// 0).
    pub fn new(client: ClientId, serial: u64, command: Command) -> Self {
        Self { client, serial, acked_below: 0, retry: false, command }
    }
}

/// The layout of [`Entry`] before format 4 (without `rules`), over the request layout of its
/// format: read from old logs as an entry of [`crate::rules::RULES_UNSTAMPED`].
#[derive(Encode, Decode)]
#[bincode(decode_context = "Format")]
pub(crate) struct Unstamped<R> {
    timestamp_ms: i64,
    requests: Vec<R>,
}

impl<R: Into<Request>> From<Unstamped<R>> for Entry {
    fn from(entry: Unstamped<R>) -> Self {
        let requests = entry.requests.into_iter().map(Into::into).collect();
        Self { timestamp_ms: entry.timestamp_ms, rules: crate::rules::RULES_UNSTAMPED, requests }
    }
}

#[cfg(test)]
impl<R: for<'a> From<&'a Request>> From<&Entry> for Unstamped<R> {
    fn from(entry: &Entry) -> Self {
        Self { timestamp_ms: entry.timestamp_ms, requests: entry.requests.iter().map(R::from).collect() }
    }
}

/// Format 1's layouts of the types format 2 changed, read from old logs. They reuse today's
/// `Command` and `ClientId`, unchanged since format 1: a later change to one of those needs its
/// own frozen copy here (the format-1 fixture test fails otherwise).
pub(crate) mod v1 {
    use bincode::{Decode, Encode};

    use super::Command;
    use crate::ids::ClientId;

    /// Format 1's [`super::Entry`].
    pub(crate) type Entry = super::Unstamped<Request>;

    /// Format 1's [`super::Request`]: without `acked_below` (nor `retry`).
    #[derive(Encode, Decode)]
    #[bincode(decode_context = "crate::codec::Format")]
    pub(crate) struct Request {
        client: ClientId,
        serial: u64,
        command: Command,
    }

    impl From<Request> for super::Request {
        fn from(r: Request) -> Self {
            Self::new(r.client, r.serial, r.command)
        }
    }

    #[cfg(test)]
    impl From<&super::Request> for Request {
        fn from(r: &super::Request) -> Self {
            Self { client: r.client, serial: r.serial, command: r.command.clone() }
        }
    }
}

/// Formats 2 and 3's layouts of [`Entry`] and [`Request`], which format 4 changed (it added
/// `rules` and `retry`), read from old logs. They reuse today's `Command` and `ClientId`.
pub(crate) mod v3 {
    use bincode::{Decode, Encode};

    use super::Command;
    use crate::ids::ClientId;

    /// Formats 2 and 3's [`super::Entry`]: without `rules`.
    pub(crate) type Entry = super::Unstamped<Request>;

    /// Formats 2 and 3's [`super::Request`]: without `retry` (every request a first attempt).
    #[derive(Encode, Decode)]
    #[bincode(decode_context = "crate::codec::Format")]
    pub(crate) struct Request {
        client: ClientId,
        serial: u64,
        acked_below: u64,
        command: Command,
    }

    impl From<Request> for super::Request {
        fn from(r: Request) -> Self {
            Self { acked_below: r.acked_below, ..Self::new(r.client, r.serial, r.command) }
        }
    }

    #[cfg(test)]
    impl From<&super::Request> for Request {
        fn from(r: &super::Request) -> Self {
            Self { client: r.client, serial: r.serial, acked_below: r.acked_below, command: r.command.clone() }
        }
    }
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

/// What a delete does with the object's dependents (the objects naming it among their owner
/// references), as Kubernetes' `propagationPolicy`: carried out by the garbage collector
/// ([`crate::gc`]) through the finalizer each policy puts on the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
pub enum PropagationPolicy {
    /// The dependents are kept: the collector removes their owner references to the object
    /// (finalizer [`FINALIZER_ORPHAN`]), then the object goes.
    Orphan,
    /// Both finalizers removed: the object goes as a delete without a policy would (at once,
    /// unless other finalizers, a pod's grace period or a namespace's content hold it); the
    /// collector deletes the dependents once it is gone.
    Background,
    /// The object stays, marked, while the collector deletes its dependents; it goes once
    /// those whose reference has `blockOwnerDeletion` are gone (finalizer
    /// [`FINALIZER_FOREGROUND`]); the others may outlive it and are collected after it.
    Foreground,
}

/// The finalizer of an object deleted with [`PropagationPolicy::Orphan`] (Kubernetes' name).
pub const FINALIZER_ORPHAN: &str = "orphan";
/// The finalizer of an object deleted with [`PropagationPolicy::Foreground`] (Kubernetes' name).
pub const FINALIZER_FOREGROUND: &str = "foregroundDeletion";

impl PropagationPolicy {
    /// Every policy, in the order errors list them.
    pub const ALL: [PropagationPolicy; 3] =
        [PropagationPolicy::Background, PropagationPolicy::Foreground, PropagationPolicy::Orphan];

    /// Its name in the API (`Orphan`, `Background`, `Foreground`).
    pub fn as_str(self) -> &'static str {
        match self {
            PropagationPolicy::Orphan => "Orphan",
            PropagationPolicy::Background => "Background",
            PropagationPolicy::Foreground => "Foreground",
        }
    }

    /// The policy of an API name.
    ///
    /// # Errors
    /// Kubernetes' message for an unsupported value, naming `propagationPolicy` (and quoting
    /// at most 64 characters of the value).
    pub fn parse(name: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|p| p.as_str() == name).ok_or_else(|| {
            let shown: String = name.chars().take(64).collect();
            format!(
                "propagationPolicy: Unsupported value: {}: supported values: \"Background\", \"Foreground\", \"Orphan\"",
                crate::validation::q(&shown)
            )
        })
    }

    /// The finalizers an object carrying `finalizers` has once deleted under `policy`
    /// (Kubernetes' `deletionFinalizersForGarbageCollection`): without a policy they are
    /// kept; with one, the finalizer of the other policy is dropped and this one's added.
    pub fn finalizers(policy: Option<PropagationPolicy>, finalizers: &[crate::text::Text]) -> Vec<crate::text::Text> {
        let Some(policy) = policy else { return finalizers.to_vec() };
        let mut out: Vec<crate::text::Text> = finalizers
            .iter()
            .filter(|f| f.as_str() != FINALIZER_ORPHAN && f.as_str() != FINALIZER_FOREGROUND)
            .cloned()
            .collect();
        let wanted = match policy {
            PropagationPolicy::Orphan => Some(FINALIZER_ORPHAN),
            PropagationPolicy::Foreground => Some(FINALIZER_FOREGROUND),
            PropagationPolicy::Background => None,
        };
        if let Some(f) = wanted {
            // Where it stood, if it was there already (no change to report).
            match finalizers.iter().position(|g| g.as_str() == f) {
                Some(i) => out.insert(i.min(out.len()), f.into()),
                None => out.push(f.into()),
            }
        }
        out
    }
}

impl fmt::Display for PropagationPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A change to the cluster state.
///
/// Decoding refuses a batch inside a batch (apply refuses it anyway): bytes from a peer, the
/// disk or a backup cannot nest batches deep enough to overflow the stack.
#[derive(Clone, Debug, PartialEq, Eq)]
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
        /// What becomes of its dependents; `None` keeps what its finalizers say (a background
        /// cascade for an object without [`FINALIZER_ORPHAN`] or [`FINALIZER_FOREGROUND`]).
        /// Since format 10: a delete with a policy is encoded as variant 9.
        propagation_policy: Option<PropagationPolicy>,
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
    /// Apply one object's manifest, as submitted: JSON text (what `orchctl apply` sends since
    /// format 12; at most [`crate::merge::APPLY_MANIFEST_BYTES_MAX`] bytes). Creates the object,
    /// or merges the manifest into the live one with kubectl's three-way merge against the
    /// manifest applied last ([`crate::merge`]), so what others set (a scale, a controller's
    /// annotations, owner references, finalizers) stays. The text, not a typed object, because
    /// only the text tells an absent list from an empty one. Encoded as variant 10.
    ApplyManifest(String),
    /// Set `spec.replicas` of a Deployment or ReplicaSet (Kubernetes' scale subresource), on
    /// the object as it is when the entry applies: no read-modify-write, so nothing to
    /// conflict with, and deduplicated by the caller's write id like any write (format 3).
    Scale {
        /// The Deployment or ReplicaSet.
        key: ObjectKey,
        /// The new number of replicas (at least 0).
        replicas: i32,
    },
    /// Roll a Deployment's pod template back to that of one of its ReplicaSets: the one of
    /// `to_revision`, or with 0 the one before the newest (`orchctl rollout undo`), chosen when
    /// the entry applies (format 3).
    RolloutUndo {
        /// The Deployment's namespace.
        namespace: String,
        /// The Deployment's name.
        name: String,
        /// The revision to go back to; 0 for the previous one.
        to_revision: i64,
    },
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
///
/// As for [`Command`], decoding refuses a batch error inside a batch error.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Serialize, Deserialize, thiserror::Error)]
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
    /// A retried request the table has no record of: its client has no session (idle for
    /// [`crate::sessions::SESSION_IDLE_MS_MAX`], beyond the [`crate::sessions::SESSIONS_MAX`]
    /// most recently seen, or never opened), or the session was opened by a later serial. An
    /// earlier attempt may have been applied, and its outcome is gone. Not applied; under rules
    /// 2 recorded as the serial's outcome, so that it is never applied later either. Since
    /// format 4.
    #[error(
        "client {client}'s retried request {serial} has no record (the client's session expired or was opened after it): whether it was applied is unknown"
    )]
    SessionExpired {
        /// The client.
        client: ClientId,
        /// The serial.
        serial: u64,
    },
}

/// The outcome of one request.
pub type Outcome = Result<Success, ApplyError>;

/// The rules of a batch's shape, checked by apply and before proposing: no batch inside a
/// batch, at most [`BATCH_COMMANDS_MAX`] commands.
pub(crate) fn check_batch_shape(commands: usize, in_batch: bool) -> Result<(), ApplyError> {
    if in_batch {
        return Err(ApplyError::BadRequest { reason: "a batch may not contain a batch".into() });
    }
    if commands > BATCH_COMMANDS_MAX {
        return Err(ApplyError::BadRequest {
            reason: format!("a batch may hold at most {BATCH_COMMANDS_MAX} commands, this one holds {commands}"),
        });
    }
    Ok(())
}

/// The rules of a scale that need no state, checked by apply and before proposing: a
/// Deployment or a ReplicaSet, and at least 0 replicas.
pub(crate) fn check_scale(key: &ObjectKey, replicas: i32) -> Result<(), ApplyError> {
    if !matches!(key.kind, Kind::Deployment | Kind::ReplicaSet) {
        return Err(ApplyError::BadRequest {
            reason: format!(
                "key.kind: Unsupported value: {}: supported values: \"Deployment\", \"ReplicaSet\"",
                crate::validation::q(key.kind.as_str())
            ),
        });
    }
    if replicas < 0 {
        let mut errors = crate::validation::FieldErrors::default();
        errors.invalid("spec.replicas", replicas, "must be greater than or equal to 0");
        return Err(ApplyError::Invalid { kind: key.kind, name: key.name.to_string(), errors });
    }
    Ok(())
}

/// The rule of a rollback that needs no state: a revision of at least 0 (0 is the previous one).
pub(crate) fn check_rollout_undo(to_revision: i64) -> Result<(), ApplyError> {
    if to_revision < 0 {
        return Err(ApplyError::BadRequest {
            reason: format!("toRevision: Invalid value: {to_revision}: must be greater than or equal to 0"),
        });
    }
    Ok(())
}

/// The error of command `index` of a batch.
pub(crate) fn batch_error(index: usize, error: ApplyError) -> ApplyError {
    ApplyError::Batch { index: u32::try_from(index).unwrap_or(u32::MAX), error: Box::new(error) }
}

// Decoding by hand, with the variant numbers the derived `Encode` writes (declaration order), so
// that a batch cannot hold a batch: nesting would recurse once per level of the input. Tested
// for every variant in `tests::every_variant_decodes_as_encoded`.

fn decode_length<D: Decoder>(decoder: &mut D) -> Result<usize, DecodeError> {
    let len = u64::decode(decoder)?;
    usize::try_from(len).map_err(|_| DecodeError::OutsideUsizeRange(len))
}

/// The variants of `Command` and `ApplyError`, for the error about any other.
const COMMAND_VARIANTS: AllowedEnumVariants = AllowedEnumVariants::Range { min: 0, max: 10 };
const APPLY_ERROR_VARIANTS: AllowedEnumVariants = AllowedEnumVariants::Range { min: 0, max: 8 };

const NESTED_BATCH: &str = "a batch may not contain a batch";

fn decode_command<D: Decoder<Context = Format>>(decoder: &mut D, in_batch: bool) -> Result<Command, DecodeError> {
    Ok(match u32::decode(decoder)? {
        0 => Command::Create(Decode::decode(decoder)?),
        1 => Command::Update(Decode::decode(decoder)?),
        2 => Command::UpdateStatus(Decode::decode(decoder)?),
        3 => Command::Delete {
            key: Decode::decode(decoder)?,
            grace_period_seconds: Decode::decode(decoder)?,
            preconditions: Decode::decode(decoder)?,
            propagation_policy: None,
        },
        4 => Command::Bind {
            namespace: Decode::decode(decoder)?,
            name: Decode::decode(decoder)?,
            node: Decode::decode(decoder)?,
            preconditions: Decode::decode(decoder)?,
        },
        5 if in_batch => return Err(DecodeError::Other(NESTED_BATCH)),
        5 => {
            let len = decode_length(decoder)?;
            decoder.claim_container_read::<Command>(len)?;
            let mut commands = Vec::with_capacity(len);
            for _ in 0..len {
                decoder.unclaim_bytes_read(std::mem::size_of::<Command>());
                commands.push(decode_command(decoder, true)?);
            }
            Command::Batch(commands)
        }
        6 => Command::Apply(Decode::decode(decoder)?),
        7 => Command::Scale { key: Decode::decode(decoder)?, replicas: Decode::decode(decoder)? },
        8 => Command::RolloutUndo {
            namespace: Decode::decode(decoder)?,
            name: Decode::decode(decoder)?,
            to_revision: Decode::decode(decoder)?,
        },
        9 => Command::Delete {
            key: Decode::decode(decoder)?,
            grace_period_seconds: Decode::decode(decoder)?,
            preconditions: Decode::decode(decoder)?,
            propagation_policy: Some(Decode::decode(decoder)?),
        },
        10 => Command::ApplyManifest(Decode::decode(decoder)?),
        found => {
            return Err(DecodeError::UnexpectedVariant { type_name: "Command", allowed: &COMMAND_VARIANTS, found });
        }
    })
}

// Encoding by hand too: variants 0 to 8 as the derive would write them (a delete without a
// policy keeps the layout formats 3 to 9 wrote), a delete with one as variant 9, its policy last.
impl Encode for Command {
    fn encode<E: bincode::enc::Encoder>(&self, encoder: &mut E) -> Result<(), bincode::error::EncodeError> {
        match self {
            Command::Create(o) => (0u32, o).encode(encoder),
            Command::Update(o) => (1u32, o).encode(encoder),
            Command::UpdateStatus(o) => (2u32, o).encode(encoder),
            Command::Delete { key, grace_period_seconds, preconditions, propagation_policy: None } => {
                (3u32, key, grace_period_seconds, preconditions).encode(encoder)
            }
            Command::Delete { key, grace_period_seconds, preconditions, propagation_policy: Some(policy) } => {
                (9u32, key, grace_period_seconds, preconditions, policy).encode(encoder)
            }
            Command::Bind { namespace, name, node, preconditions } => {
                (4u32, namespace, name, node, preconditions).encode(encoder)
            }
            Command::Batch(commands) => (5u32, commands).encode(encoder),
            Command::Apply(o) => (6u32, o).encode(encoder),
            Command::Scale { key, replicas } => (7u32, key, replicas).encode(encoder),
            Command::RolloutUndo { namespace, name, to_revision } => {
                (8u32, namespace, name, to_revision).encode(encoder)
            }
            Command::ApplyManifest(text) => (10u32, text).encode(encoder),
        }
    }
}

impl Decode<Format> for Command {
    fn decode<D: Decoder<Context = Format>>(decoder: &mut D) -> Result<Self, DecodeError> {
        decode_command(decoder, false)
    }
}
bincode::impl_borrow_decode_with_context!(Command, Format);

fn decode_apply_error<D: Decoder>(decoder: &mut D, in_batch: bool) -> Result<ApplyError, DecodeError> {
    Ok(match u32::decode(decoder)? {
        0 => ApplyError::Invalid {
            kind: Decode::decode(decoder)?,
            name: Decode::decode(decoder)?,
            errors: Decode::decode(decoder)?,
        },
        1 => ApplyError::AlreadyExists { key: Decode::decode(decoder)? },
        2 => ApplyError::NotFound { key: Decode::decode(decoder)? },
        3 => ApplyError::Conflict { key: Decode::decode(decoder)?, reason: Decode::decode(decoder)? },
        4 => ApplyError::Forbidden { key: Decode::decode(decoder)?, reason: Decode::decode(decoder)? },
        5 => ApplyError::BadRequest { reason: Decode::decode(decoder)? },
        6 => ApplyError::StaleRequest { client: Decode::decode(decoder)?, serial: Decode::decode(decoder)? },
        7 if in_batch => return Err(DecodeError::Other(NESTED_BATCH)),
        7 => ApplyError::Batch { index: Decode::decode(decoder)?, error: Box::new(decode_apply_error(decoder, true)?) },
        8 => ApplyError::SessionExpired { client: Decode::decode(decoder)?, serial: Decode::decode(decoder)? },
        found => {
            let allowed = &APPLY_ERROR_VARIANTS;
            return Err(DecodeError::UnexpectedVariant { type_name: "ApplyError", allowed, found });
        }
    })
}

impl<Context> Decode<Context> for ApplyError {
    fn decode<D: Decoder<Context = Context>>(decoder: &mut D) -> Result<Self, DecodeError> {
        decode_apply_error(decoder, false)
    }
}
bincode::impl_borrow_decode!(ApplyError);

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};

    fn namespace() -> Object {
        crate::manifest::parse_manifests("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}")
            .expect("valid")
            .remove(0)
    }

    /// The API names of the policies parse back; anything else is refused naming the field,
    /// quoting a bounded part of the value.
    #[test]
    fn propagation_policies_parse_by_their_api_names() {
        for policy in PropagationPolicy::ALL {
            assert_eq!(PropagationPolicy::parse(policy.as_str()), Ok(policy));
        }
        assert_eq!(
            PropagationPolicy::parse("orphan"),
            Err("propagationPolicy: Unsupported value: \"orphan\": supported values: \"Background\", \
                 \"Foreground\", \"Orphan\""
                .to_owned())
        );
        let long = PropagationPolicy::parse(&"x".repeat(10_000)).expect_err("refused");
        assert!(long.len() < 200, "{long}");
    }

    /// A policy swaps the other's finalizer for its own, keeping every other finalizer and
    /// the place of its own; no policy keeps them all.
    #[test]
    fn a_policy_swaps_the_finalizers() {
        let list = |names: &[&str]| names.iter().map(|n| crate::text::Text::from(*n)).collect::<Vec<_>>();
        let f = |policy, names: &[&str]| PropagationPolicy::finalizers(policy, &list(names));
        let (orphan, fg, bg) =
            (Some(PropagationPolicy::Orphan), Some(PropagationPolicy::Foreground), Some(PropagationPolicy::Background));
        assert_eq!(f(orphan, &["a"]), list(&["a", "orphan"]));
        assert_eq!(f(orphan, &["orphan", "a"]), list(&["orphan", "a"]), "unchanged");
        assert_eq!(f(fg, &["orphan", "a"]), list(&["a", "foregroundDeletion"]));
        assert_eq!(f(bg, &["foregroundDeletion", "a", "orphan"]), list(&["a"]));
        assert_eq!(f(None, &["orphan", "a"]), list(&["orphan", "a"]));
    }

    /// The hand-written encoder writes what the derived one of formats 3 to 9 wrote for
    /// every command those formats had (a delete without a policy included), so that
    /// entries and their outcomes' digests do not change with format 10.
    #[test]
    fn commands_encode_as_the_derived_layout_did() {
        #[derive(Encode)]
        enum Derived {
            Create(Object),
            Update(Object),
            UpdateStatus(Object),
            Delete { key: ObjectKey, grace_period_seconds: Option<i64>, preconditions: Preconditions },
            Bind { namespace: String, name: String, node: String, preconditions: Preconditions },
            Batch(Vec<Derived>),
            Apply(Object),
            Scale { key: ObjectKey, replicas: i32 },
            RolloutUndo { namespace: String, name: String, to_revision: i64 },
        }
        let key = ObjectKey::new(Kind::Pod, "default", "p");
        let pre = Preconditions { uid: Some(Uid::from_u128(3)), resource_version: Some(Revision(4)) };
        let pairs = vec![
            (Command::Create(namespace()), Derived::Create(namespace())),
            (Command::Update(namespace()), Derived::Update(namespace())),
            (Command::UpdateStatus(namespace()), Derived::UpdateStatus(namespace())),
            (
                Command::Delete {
                    key: key.clone(),
                    grace_period_seconds: Some(5),
                    preconditions: pre.clone(),
                    propagation_policy: None,
                },
                Derived::Delete { key: key.clone(), grace_period_seconds: Some(5), preconditions: pre.clone() },
            ),
            (
                Command::Bind { namespace: "a".into(), name: "p".into(), node: "n".into(), preconditions: pre.clone() },
                Derived::Bind { namespace: "a".into(), name: "p".into(), node: "n".into(), preconditions: pre },
            ),
            (Command::Batch(vec![Command::Apply(namespace())]), Derived::Batch(vec![Derived::Apply(namespace())])),
            (Command::Scale { key: key.clone(), replicas: 2 }, Derived::Scale { key, replicas: 2 }),
            (
                Command::RolloutUndo { namespace: "a".into(), name: "d".into(), to_revision: 1 },
                Derived::RolloutUndo { namespace: "a".into(), name: "d".into(), to_revision: 1 },
            ),
        ];
        for (command, derived) in pairs {
            assert_eq!(encode(&command), encode(&derived), "{command:?}");
        }
    }

    #[test]
    fn every_variant_decodes_as_encoded() {
        let key = ObjectKey::new(Kind::Pod, "default", "p");
        let pre = Preconditions { uid: Some(Uid::from_u128(3)), resource_version: Some(Revision(4)) };
        let commands = vec![
            Command::Create(namespace()),
            Command::Update(namespace()),
            Command::UpdateStatus(namespace()),
            Command::Delete {
                key: key.clone(),
                grace_period_seconds: Some(0),
                preconditions: pre.clone(),
                propagation_policy: None,
            },
            Command::Delete {
                key: key.clone(),
                grace_period_seconds: None,
                preconditions: pre.clone(),
                propagation_policy: Some(PropagationPolicy::Foreground),
            },
            Command::Bind { namespace: "default".into(), name: "p".into(), node: "n".into(), preconditions: pre },
            Command::Batch(vec![Command::Create(namespace()), Command::Apply(namespace())]),
            Command::Apply(namespace()),
            Command::Scale { key: ObjectKey::new(Kind::Deployment, "default", "d"), replicas: 3 },
            Command::RolloutUndo { namespace: "default".into(), name: "d".into(), to_revision: 2 },
            Command::ApplyManifest(r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a"}}"#.into()),
            Command::Batch(vec![Command::ApplyManifest("{}".into())]),
        ];
        for command in commands {
            assert_eq!(decode::<Command>(&encode(&command), 1 << 20).expect("decodes"), command);
        }
        let errors = vec![
            ApplyError::Invalid { kind: Kind::Pod, name: "p".into(), errors: FieldErrors::default() },
            ApplyError::AlreadyExists { key: key.clone() },
            ApplyError::NotFound { key: key.clone() },
            ApplyError::Conflict { key: key.clone(), reason: "r".into() },
            ApplyError::Forbidden { key: key.clone(), reason: "r".into() },
            ApplyError::BadRequest { reason: "r".into() },
            ApplyError::StaleRequest { client: ClientId(1), serial: 2 },
            ApplyError::Batch { index: 3, error: Box::new(ApplyError::NotFound { key }) },
            ApplyError::SessionExpired { client: ClientId(1), serial: 2 },
        ];
        for error in errors {
            assert_eq!(decode::<ApplyError>(&encode(&error), 1 << 20).expect("decodes"), error);
        }
    }

    /// The bytes of a batch holding a batch holding a batch... `depth` deep (the value itself
    /// could not be built and encoded that deep without overflowing the stack).
    fn nested_batches(depth: usize, variant: u8) -> Vec<u8> {
        let mut bytes = vec![crate::codec::FORMAT_VERSION];
        for _ in 0..depth {
            bytes.push(variant);
            if variant == 7 {
                bytes.push(0); // ApplyError::Batch's index
            } else {
                bytes.push(1); // a batch of one command
            }
        }
        bytes
    }

    #[test]
    fn nested_batches_are_refused_not_recursed_into() {
        // A million levels: decoding them recursively would overflow any thread's stack.
        let command = decode::<Command>(&nested_batches(1_000_000, 5), usize::MAX).expect_err("nested");
        assert!(command.to_string().contains("a batch may not contain a batch"), "{command}");
        let error = decode::<ApplyError>(&nested_batches(1_000_000, 7), usize::MAX).expect_err("nested");
        assert!(error.to_string().contains("a batch may not contain a batch"), "{error}");
        // Inside an entry too, as a peer or the disk would send it: the format 4 layout, time 0,
        // rules 1, one request (client 1, serial 1, acked below 1, a first attempt).
        let mut entry = vec![crate::codec::FORMAT_VERSION, 0, 1, 1, 1, 1, 1, 0];
        entry.extend_from_slice(&nested_batches(100_000, 5)[1..]);
        let error = crate::codec::decode_entry(&entry).expect_err("nested");
        assert!(error.to_string().contains("a batch may not contain a batch"), "{error}");
    }
}
