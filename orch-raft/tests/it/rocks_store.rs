//! The RocksDB log store: openraft's conformance suite, durability across reopen, and group
//! commit.

use openraft::StorageError;
use openraft::storage::{IOFlushed, RaftLogReader, RaftLogStorage};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::testing::{blank_ent, log_id};
use openraft::type_config::TypeConfigExt;
use orch_raft::StateMachineStore;
use orch_raft::TypeConfig;
use orch_raft::rocks::RocksLogStore;
use tempfile::TempDir;

struct RocksBuilder;

impl StoreBuilder<TypeConfig, RocksLogStore, StateMachineStore, TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(TempDir, RocksLogStore, StateMachineStore), StorageError<TypeConfig>> {
        let dir = TempDir::new().map_err(|e| StorageError::read(TypeConfig::err_from_error(&e)))?;
        let store = RocksLogStore::open(dir.path()).map_err(|e| StorageError::read(TypeConfig::err_from_error(&e)))?;
        Ok((dir, store, StateMachineStore::in_memory()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rocks_log_store_passes_the_openraft_storage_suite() {
    Suite::test_all(RocksBuilder).await.expect("the RocksDB log store passes openraft's suite");
}

/// Appends `indexes` and returns once the store reports them durable.
async fn append_durably(store: &mut RocksLogStore, indexes: impl IntoIterator<Item = u64>) {
    let (tx, rx) = TypeConfig::oneshot();
    let entries: Vec<_> = indexes.into_iter().map(|i| blank_ent::<TypeConfig>(1, 0, i)).collect();
    store.append(entries, IOFlushed::Signal(tx)).await.expect("append");
    rx.await.expect("callback sent").expect("durable");
}

#[tokio::test]
async fn the_log_vote_and_purge_point_survive_a_reopen() {
    let dir = TempDir::new().expect("temp dir");
    {
        let mut store = RocksLogStore::open(dir.path()).expect("open");
        append_durably(&mut store, 1..=10).await;
        store.save_vote(&openraft::alias::VoteOf::<TypeConfig>::new_committed(3, 7)).await.expect("vote");
        store.purge(log_id::<TypeConfig>(1, 0, 4)).await.expect("purge");
        store.truncate_after(Some(log_id::<TypeConfig>(1, 0, 8))).await.expect("truncate");
    }
    let mut store = RocksLogStore::open(dir.path()).expect("reopen");
    let state = store.get_log_state().await.expect("log state");
    assert_eq!(state.last_purged_log_id, Some(log_id::<TypeConfig>(1, 0, 4)));
    assert_eq!(state.last_log_id, Some(log_id::<TypeConfig>(1, 0, 8)));
    let mut reader = store.get_log_reader().await;
    let indexes: Vec<u64> =
        reader.try_get_log_entries(0..100).await.expect("read").iter().map(|e| e.log_id.index).collect();
    assert_eq!(indexes, [5, 6, 7, 8], "no entry at or below the purge point, none after the truncation");
    let vote = reader.read_vote().await.expect("vote");
    assert_eq!(vote, Some(openraft::alias::VoteOf::<TypeConfig>::new_committed(3, 7)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_are_readable_at_once_and_durable_in_order() {
    let dir = TempDir::new().expect("temp dir");
    let mut store = RocksLogStore::open(dir.path()).expect("open");
    let mut waiting = Vec::new();
    for i in 1..=200 {
        let (tx, rx) = TypeConfig::oneshot();
        store.append([blank_ent::<TypeConfig>(1, 0, i)], IOFlushed::Signal(tx)).await.expect("append");
        // Readable when append returns, before it is durable.
        let mut reader = store.get_log_reader().await;
        assert_eq!(reader.try_get_log_entries(i..=i).await.expect("read").len(), 1);
        waiting.push(rx);
    }
    for rx in waiting {
        rx.await.expect("callback sent").expect("durable");
    }
    let stats = store.stats();
    let syncs = stats.syncs.load(std::sync::atomic::Ordering::Relaxed);
    let appends = stats.appends.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(appends, 200);
    assert!((1..=200).contains(&syncs), "{syncs} syncs for 200 appends");
}
