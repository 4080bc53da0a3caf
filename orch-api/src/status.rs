//! The one place where outcomes become gRPC statuses and statuses become typed errors.
//!
//! | rejection | gRPC code |
//! |---|---|
//! | not found | NOT_FOUND |
//! | already exists | ALREADY_EXISTS |
//! | conflict (precondition, resourceVersion) | ABORTED |
//! | invalid (field and rule named), bad request | INVALID_ARGUMENT |
//! | forbidden in the current state | FAILED_PRECONDITION |
//! | a stale request or a retry from an expired session: its outcome is no longer known | FAILED_PRECONDITION (+ `orch-reason: outcome-unknown`) |
//! | not the leader, no quorum, shutting down | UNAVAILABLE (+ `orch-leader` metadata; `orch-reason: not-proposed` when nothing was proposed) |
//! | over a limit | RESOURCE_EXHAUSTED |
//! | watch revision older than the history kept | OUT_OF_RANGE |

use orch_core::ApplyError;
use tonic::{Code, Status};

use crate::{LEADER_METADATA, NOT_PROPOSED, OUTCOME_UNKNOWN, REASON_METADATA};

/// What a call to the API can fail with. The message is the server's, intact.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The object (or its namespace) does not exist.
    #[error("{0}")]
    NotFound(String),
    /// An object with that kind, namespace and name exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// The object changed since it was read (a failed precondition or resourceVersion).
    #[error("{0}")]
    Conflict(String),
    /// The request breaks a rule; the message names the field and the rule.
    #[error("{0}")]
    Invalid(String),
    /// The request is not allowed in the current state.
    #[error("{0}")]
    Forbidden(String),
    /// A retried write whose first outcome the server no longer keeps: the client said it had
    /// the reply (a later write of it carried a higher `acked_below`), the table (bounded in
    /// bytes) dropped the outcomes of the least recently seen clients but kept their sessions,
    /// or the server has no record of a retried write (the client's session expired: idle for
    /// 30 minutes, or beyond the 65,536 most recently seen; or was opened after the write; or no
    /// write of the client ever reached the log). It may or may not have been applied; it is
    /// not applied later (under rules 1, the format 4 entries', a first attempt still on its way
    /// could be).
    #[error("{0}")]
    OutcomeUnknown(String),
    /// The server cannot serve the request now (not the leader, no quorum, shutting down, or
    /// unreachable); `leader` is the leader's API address when the server knows it.
    #[error("{message}")]
    Unavailable {
        /// Why.
        message: String,
        /// The leader's API address.
        leader: Option<String>,
        /// The server answered before proposing anything (it is not the leader): a write sent
        /// again is still a first attempt. False when a proposal may have been made.
        not_proposed: bool,
    },
    /// The request is over a limit.
    #[error("{0}")]
    ResourceExhausted(String),
    /// A watch asked for a revision older than the history kept: list again, then watch from
    /// the list's revision.
    #[error("{0}")]
    Expired(String),
    /// The call took too long.
    #[error("{0}")]
    Timeout(String),
    /// Every server address refused the connection: nothing listens there (a wrong address,
    /// or the whole control plane is down). Only a client makes it, unless
    /// [`crate::client::ClientOptions::wait_while_refused`] asks it to keep trying; on the
    /// wire it would be UNAVAILABLE.
    #[error("{0}")]
    Refused(String),
    /// Anything else (an internal error, a broken response).
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// An UNAVAILABLE error with no leader hint.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Error::Unavailable { message: message.into(), leader: None, not_proposed: false }
    }

    /// The gRPC code of this error.
    pub fn code(&self) -> Code {
        match self {
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::Conflict(_) => Code::Aborted,
            Error::Invalid(_) => Code::InvalidArgument,
            Error::Forbidden(_) | Error::OutcomeUnknown(_) => Code::FailedPrecondition,
            Error::Unavailable { .. } | Error::Refused(_) => Code::Unavailable,
            Error::ResourceExhausted(_) => Code::ResourceExhausted,
            Error::Expired(_) => Code::OutOfRange,
            Error::Timeout(_) => Code::DeadlineExceeded,
            Error::Internal(_) => Code::Internal,
        }
    }

    /// The message without the kind of error.
    pub fn message(&self) -> &str {
        match self {
            Error::NotFound(m)
            | Error::AlreadyExists(m)
            | Error::Conflict(m)
            | Error::Invalid(m)
            | Error::Forbidden(m)
            | Error::OutcomeUnknown(m)
            | Error::ResourceExhausted(m)
            | Error::Expired(m)
            | Error::Timeout(m)
            | Error::Refused(m)
            | Error::Internal(m)
            | Error::Unavailable { message: m, .. } => m,
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        let mut status = Status::new(e.code(), e.message().to_owned());
        if let Error::Unavailable { leader: Some(leader), .. } = &e
            && let Ok(value) = leader.parse()
        {
            status.metadata_mut().insert(LEADER_METADATA, value);
        }
        if let Error::OutcomeUnknown(_) = &e {
            status.metadata_mut().insert(REASON_METADATA, tonic::metadata::MetadataValue::from_static(OUTCOME_UNKNOWN));
        }
        if let Error::Unavailable { not_proposed: true, .. } = &e {
            status.metadata_mut().insert(REASON_METADATA, tonic::metadata::MetadataValue::from_static(NOT_PROPOSED));
        }
        status
    }
}

/// Whether `status` says the server proposed nothing ([`NOT_PROPOSED`]).
pub(crate) fn not_proposed(status: &Status) -> bool {
    status.metadata().get(REASON_METADATA).is_some_and(|v| v.as_bytes() == NOT_PROPOSED.as_bytes())
}

impl From<Status> for Error {
    fn from(s: Status) -> Error {
        let message = s.message().to_owned();
        match s.code() {
            Code::NotFound => Error::NotFound(message),
            Code::AlreadyExists => Error::AlreadyExists(message),
            Code::Aborted => Error::Conflict(message),
            Code::InvalidArgument => Error::Invalid(message),
            Code::FailedPrecondition
                if s.metadata().get(REASON_METADATA).is_some_and(|v| v.as_bytes() == OUTCOME_UNKNOWN.as_bytes()) =>
            {
                Error::OutcomeUnknown(message)
            }
            Code::FailedPrecondition => Error::Forbidden(message),
            Code::Unavailable => {
                let leader = s.metadata().get(LEADER_METADATA).and_then(|v| v.to_str().ok()).map(str::to_owned);
                Error::Unavailable { message, leader, not_proposed: not_proposed(&s) }
            }
            Code::ResourceExhausted => Error::ResourceExhausted(message),
            // tonic's own message-size limits answer OUT_OF_RANGE; they are over-limit requests.
            Code::OutOfRange if message.contains("message length too large") => Error::ResourceExhausted(format!(
                "the request is larger than the server accepts ({} bytes at most): {message}",
                crate::REQUEST_BYTES_MAX
            )),
            Code::OutOfRange => Error::Expired(message),
            Code::DeadlineExceeded => Error::Timeout(message),
            code => Error::Internal(if message.is_empty() { format!("{code:?}") } else { message }),
        }
    }
}

impl From<&ApplyError> for Error {
    /// The status of a rejected command; a failed command of a batch keeps its own code.
    fn from(e: &ApplyError) -> Error {
        let message = e.to_string();
        let mut inner = e;
        while let ApplyError::Batch { error, .. } = inner {
            inner = error;
        }
        match inner {
            ApplyError::Invalid { .. } | ApplyError::BadRequest { .. } => Error::Invalid(message),
            ApplyError::AlreadyExists { .. } => Error::AlreadyExists(message),
            ApplyError::NotFound { .. } => Error::NotFound(message),
            ApplyError::Conflict { .. } => Error::Conflict(message),
            ApplyError::Forbidden { .. } => Error::Forbidden(message),
            ApplyError::StaleRequest { .. } | ApplyError::SessionExpired { .. } => Error::OutcomeUnknown(message),
            ApplyError::Batch { .. } => Error::Internal(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use orch_core::{Kind, ObjectKey};

    use super::*;

    #[test]
    fn a_status_round_trip_keeps_the_kind_message_and_leader_hint() {
        let errors = [
            Error::NotFound("pods \"web\" not found".into()),
            Error::AlreadyExists("pods \"web\" already exists".into()),
            Error::Conflict("Operation cannot be fulfilled".into()),
            Error::Invalid("spec.replicas: Invalid value: -1: must be >= 0".into()),
            Error::Forbidden("forbidden".into()),
            Error::OutcomeUnknown("request 3 of client 9 is older than its deduplication window".into()),
            Error::Unavailable {
                message: "not the leader".into(),
                leader: Some("127.0.0.1:7200".into()),
                not_proposed: true,
            },
            Error::unavailable("no leader"),
            Error::ResourceExhausted("too large".into()),
            Error::Expired("expired, relist".into()),
            Error::Timeout("deadline".into()),
            Error::Internal("broken".into()),
        ];
        for e in errors {
            assert_eq!(Error::from(Status::from(e.clone())), e);
        }
    }

    #[test]
    fn a_message_over_tonics_size_limit_is_an_over_limit_error() {
        let s = Status::out_of_range("Error, decoded message length too large: found 9 bytes, the limit is: 4 bytes");
        assert!(matches!(Error::from(s), Error::ResourceExhausted(m) if m.contains("the limit is: 4 bytes")));
    }

    #[test]
    fn a_stale_request_is_an_unknown_outcome_not_forbidden() {
        let e = Error::from(&ApplyError::StaleRequest { client: orch_core::ClientId(9), serial: 3 });
        assert!(matches!(e, Error::OutcomeUnknown(_)), "{e:?}");
        assert_eq!(Error::from(Status::failed_precondition("no")), Error::Forbidden("no".into()));
    }

    #[test]
    fn a_rejected_batch_command_keeps_its_own_code() {
        let key = ObjectKey::new(Kind::Pod, "default", "web");
        let e = ApplyError::Batch { index: 2, error: Box::new(ApplyError::AlreadyExists { key }) };
        let mapped = Error::from(&e);
        assert_eq!(mapped, Error::AlreadyExists("batch command 2: pods \"web\" already exists".into()));
    }
}
