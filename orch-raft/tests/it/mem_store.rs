//! The in-memory stores pass openraft's storage conformance suite.

use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use orch_raft::TypeConfig;
use orch_raft::mem::{MemLogStore, MemStateMachine};

struct MemBuilder;

impl StoreBuilder<TypeConfig, MemLogStore, MemStateMachine> for MemBuilder {
    async fn build(&self) -> Result<((), MemLogStore, MemStateMachine), StorageError<TypeConfig>> {
        Ok(((), MemLogStore::default(), MemStateMachine::default()))
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
    let batch = orch_core::Entry {
        timestamp_ms: 1_000,
        requests: vec![Request { client: ClientId(1), serial: 1, command: Command::Create(pod) }],
    };
    let normal =
        openraft::Entry { log_id: log_id::<TypeConfig>(1, 0, 2), payload: openraft::EntryPayload::Normal(batch) };
    let mut sm = MemStateMachine::default();
    sm.apply(stream::iter([Ok((blank_ent::<TypeConfig>(1, 0, 1), None)), Ok((normal, None))])).await.expect("applies");

    let (applied, _) = sm.applied_state().await.expect("applied state");
    assert_eq!(applied, Some(log_id::<TypeConfig>(1, 0, 2)));
    let revision = sm.read(|s| {
        s.get(&ObjectKey::new(Kind::Pod, "default", "web")).and_then(|p| p.meta().resource_version).map(|r| r.0)
    });
    assert_eq!(revision, Some(2), "the pod's resourceVersion is the entry's log index");
}
