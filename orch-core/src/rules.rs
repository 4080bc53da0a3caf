//! The version of apply's rules: what an entry means, as distinct from how its bytes are laid
//! out (the storage format, [`crate::codec::FORMAT_VERSION`]).
//!
//! Replicas must turn the same entry into the same state, and a snapshot one build made must
//! equal what another build reaches by replaying the log. A rule changed between builds
//! (a validation rule, a bound of the deduplication table, the wording of a message an outcome
//! keeps) breaks that unless every build applies an entry under the rules it was first applied
//! under. The format version cannot say which those were: storage and transport decode an
//! entry and re-encode it in the current layout. So every entry carries its rules version
//! ([`crate::Entry::rules`]): the proposer stamps [`RULES_VERSION`] ([`crate::Entry::new`]),
//! re-encoding keeps it, and [`crate::State::apply`] applies the entry under it.
//!
//! A build applies every version from [`RULES_VERSION_MIN`] to [`RULES_VERSION`]. An entry of
//! any other is refused when decoded ([`crate::codec::CodecError::Rules`]) and when encoded, and
//! `apply` panics on one rather than apply it under other rules: a node that cannot apply an
//! entry as written stops, as it does for an unknown format version, and never diverges. That
//! holds between builds that agree on what each version means: the one format 5 build
//! (38a0165, never released) applied version 1 entries with a check version 1 does not have,
//! so it must not run beside later builds (a cluster is upgraded by stopping it anyway).
//!
//! To change a rule: bump [`RULES_VERSION`], keep the old behaviour where the rule is applied
//! behind a test of the entry's version, and bump [`crate::codec::FORMAT_VERSION`] with it (the
//! layout may stay: then extend [`crate::codec::decode_entry`]'s current arm to the previous
//! version, which reads as it is) so that a new fixture is written (orch-raft's `write_format_fixture`; fixtures are per format
//! and never rewritten). A fixture's `sessions.json` records the outcomes its entries got, and
//! replaying every older fixture must still give them.
//!
//! Entries written before entries carried a version (storage formats 1 to 3) are applied under
//! [`RULES_UNSTAMPED`], version 1: the rules of the format 4 build. The builds of formats 1 to 3 (never
//! released) applied rules that changed from commit to commit: status writes validated from
//! issue 10 on, values in messages quoted with `{:?}` until [`crate::validation::q`], the
//! deduplication table at 4,096 sessions and without a byte bound until late in format 2, no
//! retry flag until format 4. A log one of those builds wrote replays under version 1's rules.

/// The rules version this build stamps on the entries it proposes.
///
/// - 1: the rules of the format 4 build (see below for the builds before it; the format 5
///   build also recorded session openings for entries of version 1, which a format 5
///   snapshot's reader drops).
/// - 2 (format 6): a new session remembers where it opened, and a retry it holds no record of
///   from below that point (every such retry, for a session not opened by the client's first
///   serials) is "session expired"; "session expired" is recorded as the serial's outcome
///   (under 1 it was not, so an earlier attempt still on its way could be applied after it);
///   the byte bound counts each outcome's memory ([`crate::sessions::OUTCOME_OVERHEAD_BYTES`])
///   and covers the client just recorded.
/// - 3 (format 7): `Bind` checks that the pod fits the node as it is when the entry is applied
///   ([`crate::fit::fits`]: Ready, cordon, taints, node selector, host ports, requests and pod
///   count against what the pods bound to it take; from format 11 the pod's required node
///   affinity too, which no entry of an earlier format can carry), so that a scheduler's
///   decision made on a stale view is refused (a conflict naming the reasons) instead of
///   over-committing the node. Under 1 and 2 it checked only that the node exists and is not
///   being deleted.
/// - 4 (format 8): an `Apply` over a live Deployment or ReplicaSet keeps the deployment controller's annotations
///   (`deployment.kubernetes.io/...`) the manifest does not name, and a Deployment's or
///   ReplicaSet's replicas when the manifest leaves them out (so re-applying a manifest
///   neither wipes the rollout revision nor undoes a scale); `RolloutUndo` restores the
///   revision's annotations with its template, as kubectl's undo (but the controller's own
///   and kubectl's last-applied annotation), and is refused for a paused Deployment. Under 1
///   to 3 an apply replaced the whole object and an undo changed the template only.
/// - 5 (format 9): a pod created or updated without tolerations of the `node.kubernetes.io/not-ready` and
///   `node.kubernetes.io/unreachable` `NoExecute` taints gets them, for 300 s each
///   ([`crate::defaults::default_tolerations`], Kubernetes' `DefaultTolerationSeconds`
///   admission), so that a lost node's pods are evicted and replaced after five minutes.
/// - 6 (format 12): apply merges, as kubectl's client-side apply ([`crate::merge`]): an
///   `Apply` over a live object is the three-way merge of the manifest applied last (the
///   `kubectl.kubernetes.io/last-applied-configuration` annotation), the one applied now and
///   the live object, and records the one applied now in that annotation. A typed `Apply`
///   merges its object as a manifest; the new `ApplyManifest` carries the manifest as
///   submitted. The merge keeps the controller's annotations (not named by a manifest) and
///   replicas a manifest never named, but, unlike rules 4, removes replicas the previous
///   manifest named and this one does not (as kubectl). An object last applied under rules 5
///   or earlier has no annotation, so its first apply under rules 6 removes nothing. Under 1
///   to 5 an `Apply` replaced the object (with rules 4's exceptions) and recorded nothing.
/// - 7 (format 13): a node's `spec.podCIDR` is a CIDR, and once set never changes
///   ([`crate::validation::validate_pod_cidr`], Kubernetes' rules on `spec.podCIDRs`). Under 1
///   to 6 any text was taken, and changed at will.
/// - 8 (format 14): a container's `image` is optional (the process runtime runs `command`
///   from the node's filesystem and pulls nothing; [`crate::validation::validate_under`]).
///   Under 1 to 7 it is required, as Kubernetes requires it; from 8 a container created
///   without one may be given one (with its pull policy). The new kinds and fields of format
///   14 need no rule version: no earlier entry can carry them, not even as an
///   `ApplyManifest`'s text, since every proposal passes admission
///   ([`crate::admit::check_request`]), which parses the manifest with its build's model and
///   refuses an unknown kind or field before it becomes an entry.
pub const RULES_VERSION: u16 = 8;
/// The oldest rules version this build applies.
pub const RULES_VERSION_MIN: u16 = 1;
/// The rules version of entries written before entries carried one (storage formats 1 to 3).
pub const RULES_UNSTAMPED: u16 = 1;

const _: () = assert!(RULES_VERSION_MIN <= RULES_UNSTAMPED && RULES_UNSTAMPED <= RULES_VERSION);

/// True when this build applies entries of rules version `rules`.
pub const fn known(rules: u16) -> bool {
    RULES_VERSION_MIN <= rules && rules <= RULES_VERSION
}
