//! orch-api: orch's public gRPC API.
//!
//! - [`pb`]: the messages and the tonic client and server stubs generated from
//!   `proto/api.proto` (built with a vendored protoc).
//! - [`convert`]: between the wire messages and orch-core's types. Objects travel in their
//!   Kubernetes JSON form.
//! - [`status`]: how rejections become gRPC statuses and back, with the server's message intact.
//! - [`watch`]: the watch stream's framing: a revision's events travel and arrive together.
//! - [`Client`]: the client library used by `orchctl` and the node agent. It finds the leader
//!   among the addresses it is given and retries across leader changes; every write carries
//!   the client's id and a serial, so a retried write is applied once.
//!
//! ```no_run
//! # async fn example() -> Result<(), orch_api::Error> {
//! use orch_api::Client;
//! use orch_core::{Kind, parse_manifests};
//!
//! let client = Client::new(["127.0.0.1:7100", "127.0.0.1:7200", "127.0.0.1:7300"])?;
//! let objects = parse_manifests("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n")
//!     .expect("valid manifest");
//! client.apply(&objects).await?;
//! let (namespaces, revision) = client.list(Kind::Namespace, None, "", None).await?;
//! assert!(namespaces.iter().any(|n| n.meta().name == "shop"));
//! # let _ = revision;
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

pub mod client;
pub mod convert;
pub mod status;
pub mod watch;

/// The generated messages and service stubs of `orch.api.v1`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("orch.api.v1");
}

pub use client::{Client, ClientBuilder, ClientOptions, Connection, Connector, WatchStream};

/// The wall clock in milliseconds since the epoch (0 before it, `i64::MAX` past it): what the
/// daemon's leader-only loops and orchctl's ages read. orch-core itself reads no clock.
pub fn now_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}
pub use status::Error;
pub use watch::WatchItem;

/// The largest request a server accepts, and the largest message a client sends.
pub const REQUEST_BYTES_MAX: usize = 4 * 1024 * 1024;
/// The largest response a client accepts (a list of the whole scale envelope fits).
pub const RESPONSE_BYTES_MAX: usize = 512 * 1024 * 1024;
/// The most objects one list answers; over it the list is refused (narrow it with a
/// namespace or a label selector).
pub const LIST_OBJECTS_MAX: usize = 200_000;
/// The most objects one apply writes (they go into one atomic entry).
pub const APPLY_OBJECTS_MAX: usize = orch_core::command::BATCH_COMMANDS_MAX;
/// The metadata key of an UNAVAILABLE status that names the leader's API address.
pub const LEADER_METADATA: &str = "orch-leader";
/// The metadata key that tells a FAILED_PRECONDITION status of a write whose outcome the server
/// no longer knows (value [`OUTCOME_UNKNOWN`]) from a forbidden one.
pub const REASON_METADATA: &str = "orch-reason";
/// [`REASON_METADATA`]'s value for [`status::Error::OutcomeUnknown`].
pub const OUTCOME_UNKNOWN: &str = "outcome-unknown";
/// [`REASON_METADATA`]'s value for an UNAVAILABLE answer given before anything was proposed
/// ([`status::Error::Unavailable`]'s `not_proposed`).
pub const NOT_PROPOSED: &str = "not-proposed";
/// The default API port of `orchd` (the Raft transport uses the next one).
pub const DEFAULT_API_PORT: u16 = 7100;
/// The environment variable `orchctl` reads its servers from (comma-separated addresses).
pub const SERVER_ENV: &str = "ORCH_SERVER";
