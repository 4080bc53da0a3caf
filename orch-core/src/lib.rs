//! orch-core: the cluster model and the deterministic state machine at the heart of orch.
//!
//! - **Model**: Kubernetes-shaped types ([`Namespace`], [`Node`], [`Pod`], [`Service`],
//!   [`Endpoints`], [`Deployment`], [`ReplicaSet`], [`Event`]) that read and write the same
//!   YAML and JSON as Kubernetes (camelCase fields), with a compact versioned binary encoding
//!   for storage ([`codec`]).
//! - **Manifests**: [`parse_manifests`] reads multi-document YAML or JSON and names the
//!   document, field path and problem on error.
//! - **Validation and defaults**: [`validate`] and [`apply_defaults`], with Kubernetes' messages.
//! - **State machine**: [`State::apply`] applies one committed log [`Entry`] and returns an
//!   outcome per request and the [`WatchEvent`]s; [`State::to_snapshot`] and
//!   [`State::from_snapshot`] move the whole state as bytes with a digest.
//!
//! **Boundary:** orch-core does no IO, reads no clock and draws no random number. Time enters
//! as the entry's timestamp; maps are `BTreeMap`s. The same log gives the same bytes.
//!
//! ```
//! use orch_core::{ClientId, Command, Entry, Kind, ObjectKey, Request, State, parse_manifests};
//!
//! let objects = parse_manifests(r#"
//! apiVersion: v1
//! kind: Pod
//! metadata: {name: web}
//! spec:
//!   containers: [{name: web, image: nginx:1.27}]
//! "#).expect("valid manifest");
//! let mut state = State::new();
//! let entry = Entry::new(
//!     1_700_000_000_000,
//!     vec![Request::new(ClientId(1), 1, Command::Create(objects[0].clone()))],
//! );
//! let out = state.apply(1, entry);
//! assert!(out.outcomes[0].is_ok());
//! let pod = state.get(&ObjectKey::new(Kind::Pod, "default", "web")).expect("stored");
//! assert_eq!(pod.meta().resource_version.map(|r| r.0), Some(1));
//! ```

#![forbid(unsafe_code)]

#[macro_use]
mod macros;

pub mod admit;
pub mod adopt;
pub mod agent;
pub mod apps_v1;
pub mod bounds;
pub mod codec;
pub mod command;
pub mod core_v1;
pub mod defaults;
pub mod deployment;
pub mod endpoints;
pub mod events;
pub mod fields;
pub mod fit;
pub mod gc;
pub mod ids;
mod index;
pub mod intstr;
pub mod manifest;
pub mod merge;
pub mod meta;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod object;
pub mod quantity;
pub mod reconcile;
pub mod replicaset;
pub mod rules;
pub mod scheduler;
pub mod scheduling;
pub mod schema;
pub mod selector;
pub mod sessions;
pub mod simnodes;
pub mod snapshot;
pub mod state;
pub mod strmap;
pub mod text;
pub mod time;
pub mod validation;
pub mod watch;

#[cfg(feature = "arbitrary")]
mod arbitrary;

pub use apps_v1::{Deployment, ReplicaSet};
pub use command::{
    Action, ApplyError, Change, Command, Entry, Outcome, Preconditions, PropagationPolicy, Request, Success,
};
pub use core_v1::{Endpoints, Event, Namespace, Node, Pod, Service};
pub use defaults::apply_defaults;
pub use ids::{ClientId, Revision, Uid};
pub use intstr::IntOrString;
pub use manifest::{ManifestError, parse_manifests};
pub use meta::{LabelSelector, ObjectMeta};
pub use object::{Kind, Object, ObjectKey, Resource};
pub use quantity::Quantity;
pub use selector::Selector;
pub use snapshot::{Digest, SnapshotError};
pub use state::{ApplyOutput, State};
pub use strmap::StrMap;
pub use text::Text;
pub use time::Time;
pub use validation::{FieldError, FieldErrors, validate};
pub use watch::{EventType, WatchEvent, WatchFilter};
