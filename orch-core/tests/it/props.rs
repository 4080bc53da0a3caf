//! Property tests: random command sequences keep the invariants, replays are byte-identical,
//! snapshot-restore-continue equals continuing, and encode/decode is the identity.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;

use orch_core::command::{ApplyError, Preconditions, PropagationPolicy};
use orch_core::core_v1::{PodPhase, PodStatus};
use orch_core::{
    ApplyOutput, ClientId, Command, Entry, EventType, Kind, Object, ObjectKey, Outcome, Request, Revision, State,
};

use crate::fixtures::{deployment, namespace, node, pod};

const NAMES: [&str; 3] = ["a", "b", "c"];
const NAMESPACES: [&str; 3] = ["default", "ns1", "ns2"];
const NODES: [&str; 2] = ["n1", "n2"];

fn name() -> impl Strategy<Value = &'static str> {
    prop::sample::select(&NAMES[..])
}
fn ns() -> impl Strategy<Value = &'static str> {
    prop::sample::select(&NAMESPACES[..])
}

/// An object from a small pool of names, sometimes invalid, with optional finalizers,
/// labels and expected revisions, so that conflicts, rejections and graceful deletions occur.
fn object() -> impl Strategy<Value = Object> {
    let base = prop_oneof![
        (ns(), name(), 0..3u8).prop_map(|(ns, n, image)| {
            let mut p = pod(ns, n);
            if let Object::Pod(p) = &mut p {
                Arc::make_mut(p).spec.containers[0].image = format!("busybox:1.{image}").into();
            }
            p
        }),
        (name(), -1..4i32, 0..2u8).prop_map(|(n, replicas, image)| deployment(n, replicas, &format!("nginx:{image}"))),
        prop::sample::select(&NAMESPACES[1..]).prop_map(namespace),
        prop::sample::select(&NODES[..]).prop_map(node),
    ];
    (base, any::<bool>(), 0..3u8, prop::option::of(0..12u64)).prop_map(|(mut obj, finalizer, label, rv)| {
        let meta = obj.meta_mut();
        if finalizer {
            meta.finalizers.push("example.com/hold".into());
        }
        meta.labels.insert("v", label.to_string());
        meta.resource_version = rv.map(Revision);
        obj
    })
}

fn simple_command() -> impl Strategy<Value = Command> {
    let key = (prop::sample::select(&[Kind::Pod, Kind::Deployment, Kind::Namespace, Kind::Node][..]), ns(), name())
        .prop_map(|(kind, ns, n)| {
            let n = match kind {
                Kind::Namespace => ns.to_owned(),
                Kind::Node => format!("n{}", n.len()),
                _ => n.to_owned(),
            };
            ObjectKey::new(kind, ns, &n)
        });
    prop_oneof![
        3 => object().prop_map(Command::Create),
        2 => object().prop_map(Command::Update),
        // Apply merges (rules 6): typed, and as the manifest text orchctl sends.
        1 => object().prop_map(Command::Apply),
        1 => object().prop_map(|o| Command::ApplyManifest(o.to_manifest().to_string())),
        1 => (ns(), name(), prop::sample::select(&[PodPhase::Running, PodPhase::Succeeded][..])).prop_map(|(ns, n, phase)| {
            let mut p = pod(ns, n);
            if let Object::Pod(p) = &mut p {
                Arc::make_mut(p).status = PodStatus { phase: Some(phase), ..PodStatus::default() };
            }
            Command::UpdateStatus(p)
        }),
        2 => (
            key,
            prop::option::of(prop::sample::select(&[0i64, 5, -1][..])),
            prop::option::of(0..12u64),
            prop::option::of(prop::sample::select(&PropagationPolicy::ALL[..])),
        )
            .prop_map(|(key, grace, rv, policy)| Command::Delete {
                key,
                grace_period_seconds: grace,
                preconditions: Preconditions { uid: None, resource_version: rv.map(Revision) },
                propagation_policy: policy,
            }),
        1 => (prop::sample::select(&[Kind::Deployment, Kind::Pod][..]), name(), -1..4i32).prop_map(|(kind, n, replicas)| {
            Command::Scale { key: ObjectKey::new(kind, "default", n), replicas }
        }),
        1 => (name(), -1..3i64).prop_map(|(n, to_revision)| Command::RolloutUndo {
            namespace: "default".into(),
            name: n.into(),
            to_revision,
        }),
        2 => (ns(), name(), prop::sample::select(&["n1", "n2", "n3"][..])).prop_map(|(ns, n, node)| Command::Bind {
            namespace: ns.into(),
            name: n.into(),
            node: node.into(),
            preconditions: Preconditions::default(),
        }),
    ]
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        8 => simple_command(),
        1 => prop::collection::vec(simple_command(), 0..4).prop_map(Command::Batch),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    // `acked_below` 0 (format 1), within the serial, or beyond it (refused); a client may mix
    // them and move them backwards. First attempts and retries.
    (1..3u128, 0..8u64, 0..10u64, any::<bool>(), command()).prop_map(|(client, serial, acked_below, retry, command)| {
        Request { client: ClientId(client), serial, acked_below, retry, command }
    })
}

/// A log: entries with timestamps that mostly move forward (sometimes back: the state's clock
/// must not follow).
fn log() -> impl Strategy<Value = Vec<Entry>> {
    // Entries of every rules version this build applies, mixed.
    let rules = orch_core::rules::RULES_VERSION_MIN..=orch_core::rules::RULES_VERSION;
    prop::collection::vec((-500..3000i64, rules, prop::collection::vec(request(), 0..5)), 1..40).prop_map(|entries| {
        let mut now = 1_800_000_000_000;
        entries
            .into_iter()
            .map(|(step, rules, requests)| {
                now += step;
                Entry { rules, ..Entry::new(now, requests) }
            })
            .collect()
    })
}

fn run(state: &mut State, first_index: u64, log: &[Entry]) -> Vec<ApplyOutput> {
    log.iter().enumerate().map(|(i, e)| state.apply(first_index + i as u64, e.clone())).collect()
}

fn objects(state: &State) -> BTreeMap<ObjectKey, Object> {
    Kind::ALL.iter().flat_map(|k| state.list(*k, None)).map(|o| (o.key(), o.clone())).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_logs_keep_the_invariants(log in log()) {
        let mut state = State::new();
        let mut first_outcome: BTreeMap<(ClientId, u64), Outcome> = BTreeMap::new();
        let mut floors: BTreeMap<ClientId, u64> = BTreeMap::new();
        let mut known: std::collections::BTreeSet<ClientId> = std::collections::BTreeSet::new();
        let mut opened: BTreeMap<ClientId, u64> = BTreeMap::new();
        for (i, entry) in log.into_iter().enumerate() {
            let index = i as u64 + 1;
            let before = objects(&state);
            let requests: Vec<(ClientId, u64, u64, bool)> =
                entry.requests.iter().map(|r| (r.client, r.serial, r.acked_below, r.retry)).collect();
            let rules = entry.rules;
            let out = state.apply(index, entry);
            prop_assert_eq!(out.outcomes.len(), requests.len());
            if let Err(e) = state.check_invariants() {
                return Err(TestCaseError::fail(format!("entry {index}: {e}")));
            }
            let after = objects(&state);
            // Every event carries this entry's index; changed objects carry it as their revision.
            let mut touched = std::collections::BTreeSet::new();
            for ev in &out.events {
                prop_assert_eq!(ev.revision, Revision(index));
                prop_assert_eq!(ev.object.meta().resource_version, Some(Revision(index)));
                touched.insert(ev.object.key());
                let key = ev.object.key();
                match ev.event_type {
                    EventType::Added => prop_assert_eq!(ev.object.meta().generation, Some(1)),
                    EventType::Modified => {
                        let prev = ev.prev.as_ref().expect("Modified carries the previous object");
                        let bump = i64::from(!prev.same_spec(&ev.object));
                        prop_assert_eq!(ev.object.meta().generation, prev.meta().generation.map(|g| g + bump));
                        prop_assert!(prev.meta().resource_version < Some(Revision(index)) || before.get(&key) != Some(prev));
                    }
                    EventType::Deleted => {}
                }
            }
            for (key, obj) in &after {
                match before.get(key) {
                    Some(old) if !touched.contains(key) => prop_assert_eq!(old, obj, "{} changed without an event", key),
                    Some(old) => prop_assert!(old.meta().resource_version < obj.meta().resource_version),
                    None => prop_assert!(touched.contains(key), "{} appeared without an event", key),
                }
            }
            for key in before.keys() {
                if !after.contains_key(key) {
                    prop_assert!(touched.contains(key), "{} vanished without an event", key);
                }
            }
            // The session model: a recorded (client, serial) answers its first outcome until the
            // client says it has the reply (a recorded request with `acked_below` above it), and
            // StaleRequest after; a request the session rule refuses is not recorded; a retry
            // from a client with no session, or (rules 2) of a serial below the one that opened
            // the client's session and not held by it, is SessionExpired, recorded under rules 2
            // only. Entries mix rules 1 and 2. (Serials stay below 8 and two clients: no count
            // bound or expiry comes into play.)
            for ((client, serial, acked_below, retry), outcome) in requests.into_iter().zip(out.outcomes) {
                if serial == 0 {
                    continue;
                }
                let floor = floors.get(&client).copied().unwrap_or(0);
                let opened_at = opened.get(&client).copied().unwrap_or(0);
                let unrecorded_retry = retry && (!known.contains(&client) || (rules >= 2 && serial < opened_at));
                if serial <= floor {
                    prop_assert_eq!(outcome, Err(ApplyError::StaleRequest { client, serial }));
                } else if let Some(first) = first_outcome.get(&(client, serial)) {
                    prop_assert_eq!(first, &outcome);
                } else if unrecorded_retry && rules < 2 {
                    // Rules 1: expired, and not recorded.
                    prop_assert_eq!(outcome, Err(ApplyError::SessionExpired { client, serial }));
                } else if orch_core::sessions::Sessions::refuse(serial, acked_below).is_some() {
                    prop_assert!(matches!(outcome, Err(ApplyError::BadRequest { .. })), "{:?}", outcome);
                } else {
                    // Rules 2: a retry the table has no record of is expired, and recorded.
                    if unrecorded_retry {
                        prop_assert_eq!(&outcome, &Err(ApplyError::SessionExpired { client, serial }));
                    }
                    // A new session (rules 2) remembers where it opened: at this serial for a
                    // client's first serials, nowhere (every unrecorded retry expired) otherwise.
                    if known.insert(client) {
                        let at = match rules {
                            1 => 0,
                            _ if acked_below == 1 && !unrecorded_retry => serial,
                            _ => u64::MAX,
                        };
                        opened.insert(client, at);
                    }
                    first_outcome.insert((client, serial), outcome);
                    floors.insert(client, floor.max(acked_below.saturating_sub(1)));
                }
            }
        }
    }

    #[test]
    fn replaying_a_log_gives_identical_bytes(log in log()) {
        let (mut a, mut b) = (State::new(), State::new());
        let out_a = run(&mut a, 1, &log);
        let out_b = run(&mut b, 1, &log);
        prop_assert_eq!(out_a, out_b);
        prop_assert_eq!(a.to_snapshot(), b.to_snapshot());
        prop_assert_eq!(a.digest(), b.digest());
    }

    #[test]
    fn snapshot_restore_continue_equals_continuing(log in log(), split in any::<prop::sample::Index>()) {
        let at = split.index(log.len() + 1);
        let mut direct = State::new();
        run(&mut direct, 1, &log[..at]);
        let restored = State::from_snapshot(&direct.to_snapshot());
        prop_assert_eq!(restored.as_ref(), Ok(&direct));
        let mut restored = restored.expect("restores");
        let rest_direct = run(&mut direct, at as u64 + 1, &log[at..]);
        let rest_restored = run(&mut restored, at as u64 + 1, &log[at..]);
        prop_assert_eq!(rest_direct, rest_restored);
        prop_assert_eq!(direct.to_snapshot(), restored.to_snapshot());
    }
}

/// Encode/decode identity for every type, on generated values (the `arbitrary` feature:
/// `cargo test --all-features`).
#[cfg(feature = "arbitrary")]
mod identity {
    use super::*;

    /// bincode and JSON round trips of one value.
    fn round_trips<T>(value: &T) -> Result<(), TestCaseError>
    where
        T: bincode::Encode
            + bincode::Decode<orch_core::codec::Format>
            + serde::Serialize
            + serde::de::DeserializeOwned
            + PartialEq
            + std::fmt::Debug,
    {
        let bytes = orch_core::codec::encode(value);
        let back: T = orch_core::codec::decode(&bytes, usize::MAX).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&back, value);
        let json = serde_json::to_string(value).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back: T = serde_json::from_str(&json).map_err(|e| TestCaseError::fail(format!("{e}: {json}")))?;
        prop_assert_eq!(&back, value);
        Ok(())
    }

    macro_rules! identity_tests {
        ($($test:ident: $ty:ty),* $(,)?) => {
            proptest! {
                #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
                $(
                    #[test]
                    fn $test(value in any::<$ty>()) {
                        round_trips(&value)?;
                    }
                )*
            }
        };
    }

    identity_tests! {
        namespace_round_trips: orch_core::Namespace,
        node_round_trips: orch_core::Node,
        pod_round_trips: orch_core::Pod,
        service_round_trips: orch_core::Service,
        endpoints_round_trips: orch_core::Endpoints,
        deployment_round_trips: orch_core::Deployment,
        replica_set_round_trips: orch_core::ReplicaSet,
        event_round_trips: orch_core::Event,
        object_meta_round_trips: orch_core::ObjectMeta,
        quantity_round_trips: orch_core::Quantity,
        time_round_trips: orch_core::Time,
        uid_round_trips: orch_core::Uid,
        revision_round_trips: orch_core::Revision,
        int_or_string_round_trips: orch_core::IntOrString,
        selector_round_trips: orch_core::Selector,
        watch_filter_round_trips: orch_core::WatchFilter,
        apply_error_round_trips: orch_core::ApplyError,
        success_round_trips: orch_core::Success,
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Objects travel as bincode in entries and as manifests (JSON and YAML) to users.
        #[test]
        fn objects_round_trip_as_bytes_and_manifests(object in any::<Object>()) {
            let bytes = orch_core::codec::encode(&object);
            let decoded = orch_core::codec::decode::<Object>(&bytes, usize::MAX);
            prop_assert_eq!(decoded.as_ref(), Ok(&object));
            let manifest = object.to_manifest();
            let back = orch_core::manifest::object_from_value(manifest.clone());
            prop_assert_eq!(back.as_ref(), Ok(&object));
            let yaml = serde_yaml_ng::to_string(&manifest).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let parsed = orch_core::parse_manifests(&yaml).map_err(|e| TestCaseError::fail(format!("{e}\n{yaml}")))?;
            prop_assert_eq!(parsed, vec![object]);
        }

        #[test]
        fn entries_round_trip(timestamp_ms in any::<i64>(), requests in prop::collection::vec(any::<Request>(), 0..3)) {
            let entry = Entry::new(timestamp_ms, requests);
            // What the encoder accepts, the decoder accepts.
            let bytes = orch_core::codec::encode_entry(&entry).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(orch_core::codec::decode_entry(&bytes), Ok(entry));
        }

        /// Bytes from a disk or a network never panic the decoders.
        #[test]
        fn garbage_never_panics_the_decoders(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = orch_core::codec::decode_entry(&bytes);
            let _ = State::from_snapshot(&bytes);
            let mut with_header = b"ORCHSNAP".to_vec();
            with_header.extend_from_slice(&bytes);
            let _ = State::from_snapshot(&with_header);
            let _ = orch_core::parse_manifests(&String::from_utf8_lossy(&bytes));
        }
    }
}
