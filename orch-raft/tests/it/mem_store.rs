//! The in-memory log store and the state machine pass openraft's storage conformance suite;
//! the state machine keeps snapshots on disk when given a directory.

use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use orch_raft::StateMachineStore;
use orch_raft::TypeConfig;
use orch_raft::mem::MemLogStore;

struct MemBuilder;

impl StoreBuilder<TypeConfig, MemLogStore, StateMachineStore> for MemBuilder {
    async fn build(&self) -> Result<((), MemLogStore, StateMachineStore), StorageError<TypeConfig>> {
        Ok(((), MemLogStore::default(), StateMachineStore::in_memory()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mem_stores_pass_the_openraft_storage_suite() {
    Suite::test_all(MemBuilder).await.expect("the in-memory stores pass openraft's suite");
}

/// Normal entries go through orch-core; blank and membership entries move only the applied
/// log id, so the state's revisions stay the indexes of the entries that changed it.
#[tokio::test]
async fn normal_entries_apply_through_orch_core() {
    use futures_util::stream;
    use openraft::storage::RaftStateMachine;
    use openraft::testing::{blank_ent, log_id};
    use orch_core::{ClientId, Command, Kind, ObjectKey, Request, parse_manifests};

    let pod =
        parse_manifests("apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec: {containers: [{name: c, image: x}]}")
            .expect("valid manifest")
            .remove(0);
    let batch = orch_core::Entry::new(1_000, vec![Request::new(ClientId(1), 1, Command::Create(pod))]);
    let normal =
        openraft::Entry { log_id: log_id::<TypeConfig>(1, 0, 2), payload: openraft::EntryPayload::Normal(batch) };
    let mut sm = StateMachineStore::in_memory();
    sm.apply(stream::iter([Ok((blank_ent::<TypeConfig>(1, 0, 1), None)), Ok((normal, None))])).await.expect("applies");

    let (applied, _) = sm.applied_state().await.expect("applied state");
    assert_eq!(applied, Some(log_id::<TypeConfig>(1, 0, 2)));
    let revision = sm.read(|s| {
        s.get(&ObjectKey::new(Kind::Pod, "default", "web")).and_then(|p| p.meta().resource_version).map(|r| r.0)
    });
    assert_eq!(revision, Some(2), "the pod's resourceVersion is the entry's log index");
}

/// With a directory, both stores of the suite are the ones production uses for the state
/// machine: the suite's snapshot transfer goes through files.
struct DiskSmBuilder;

impl StoreBuilder<TypeConfig, MemLogStore, StateMachineStore, tempfile::TempDir> for DiskSmBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, MemLogStore, StateMachineStore), StorageError<TypeConfig>> {
        use openraft::type_config::TypeConfigExt;
        let dir = tempfile::TempDir::new().map_err(|e| StorageError::read(TypeConfig::err_from_error(&e)))?;
        let sm = StateMachineStore::open(dir.path()).map_err(|e| StorageError::read(TypeConfig::err_from_error(&e)))?;
        Ok((dir, MemLogStore::default(), sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_state_machine_passes_the_openraft_storage_suite() {
    Suite::test_all(DiskSmBuilder).await.expect("the state machine with a directory passes openraft's suite");
}

/// A snapshot built (or installed) is on disk: a store reopened from the directory starts
/// from it, and a damaged file is refused rather than half-loaded.
#[tokio::test]
async fn snapshots_survive_a_reopen_and_damage_is_detected() {
    use futures_util::stream;
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
    use openraft::testing::{log_id, membership_ent};
    use orch_core::{ClientId, Command, Request};

    let dir = tempfile::TempDir::new().expect("temp dir");
    let ns = orch_core::parse_manifests("apiVersion: v1\nkind: Namespace\nmetadata: {name: team}")
        .expect("manifest")
        .remove(0);
    let batch = orch_core::Entry::new(5_000, vec![Request::new(ClientId(1), 1, Command::Create(ns))]);
    let digest = {
        let mut sm = StateMachineStore::open(dir.path()).expect("open");
        let normal =
            openraft::Entry { log_id: log_id::<TypeConfig>(1, 1, 2), payload: openraft::EntryPayload::Normal(batch) };
        sm.apply(stream::iter([
            Ok((membership_ent::<TypeConfig>(1, 1, 1, vec![[1].into()]), None)),
            Ok((normal, None)),
        ]))
        .await
        .expect("applies");
        sm.build_snapshot().await.expect("snapshot");
        sm.read(|s| s.digest())
    };
    let mut reopened = StateMachineStore::open(dir.path()).expect("reopen");
    assert_eq!(reopened.read(|s| s.digest()), digest);
    let (applied, membership) = reopened.applied_state().await.expect("applied state");
    assert_eq!(applied, Some(log_id::<TypeConfig>(1, 1, 2)));
    assert_eq!(membership.log_id(), &Some(log_id::<TypeConfig>(1, 1, 1)));
    assert!(reopened.get_current_snapshot().await.expect("read").is_some());

    let path = dir.path().join("snapshot.bin");
    let mut bytes = std::fs::read(&path).expect("snapshot file");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, &bytes).expect("damage");
    let err = StateMachineStore::open(dir.path()).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("digest mismatch"), "{err}");
}
