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

/// A store whose cache of the newest entries holds at most this many encoded bytes.
struct RocksBuilder(usize);

impl StoreBuilder<TypeConfig, RocksLogStore, StateMachineStore, TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(TempDir, RocksLogStore, StateMachineStore), StorageError<TypeConfig>> {
        let dir = TempDir::new().map_err(|e| StorageError::read(TypeConfig::err_from_error(&e)))?;
        let store = RocksLogStore::open_with_cache(dir.path(), self.0)
            .map_err(|e| StorageError::read(TypeConfig::err_from_error(&e)))?;
        Ok((dir, store, StateMachineStore::in_memory()))
    }
}

/// With the default cache (every read of the suite served from it), with none (every read
/// from RocksDB), and with one of a few entries (reads from both).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rocks_log_store_passes_the_openraft_storage_suite() {
    for bytes in [orch_raft::log_cache::LOG_CACHE_BYTES_MAX, 0, 100] {
        Suite::test_all(RocksBuilder(bytes)).await.unwrap_or_else(|e| {
            panic!("the RocksDB log store with a cache of {bytes} bytes fails openraft's suite: {e}")
        });
    }
}

/// Reads served from the cache equal reads of the log itself, across appends, a truncation,
/// a purge and the cache's eviction.
#[tokio::test]
async fn reads_from_the_cache_equal_reads_from_the_log() {
    let dir = TempDir::new().expect("temp dir");
    // Blank entries encode to 13-20 bytes: a cache of 100 bytes keeps the newest few.
    let mut store = RocksLogStore::open_with_cache(dir.path(), 100).expect("open");
    append_durably(&mut store, 1..=20).await;
    store.truncate_after(Some(log_id::<TypeConfig>(1, 0, 15))).await.expect("truncate");
    let (tx, rx) = TypeConfig::oneshot();
    let entries: Vec<_> = (16..=18).map(|i| blank_ent::<TypeConfig>(2, 0, i)).collect();
    store.append(entries, IOFlushed::Signal(tx)).await.expect("append");
    rx.await.expect("callback sent").expect("durable");
    store.purge(log_id::<TypeConfig>(1, 0, 3)).await.expect("purge");
    let mut cached = store.get_log_reader().await;
    let read = |reader: &mut orch_raft::rocks::RocksLogReader, start: u64, end: u64| {
        let mut reader = reader.clone();
        async move { reader.try_get_log_entries(start..end).await.expect("read") }
    };
    let mut everything = Vec::new();
    for start in 0..=20 {
        for end in start..=21 {
            everything.push(read(&mut cached, start, end).await);
        }
        let limited = cached.limited_get_log_entries(start, 21).await.expect("read");
        everything.push(limited);
    }
    assert!(everything.iter().flatten().any(|e| e.log_id == log_id::<TypeConfig>(2, 0, 18)), "the new suffix is read");
    assert!(!everything.iter().flatten().any(|e| e.log_id == log_id::<TypeConfig>(1, 0, 16)), "the cut suffix is not");
    drop(cached);
    drop(store);
    // The same reads of the log alone.
    let mut store = RocksLogStore::open_with_cache(dir.path(), 0).expect("reopen");
    let mut uncached = store.get_log_reader().await;
    let mut again = Vec::new();
    for start in 0..=20 {
        for end in start..=21 {
            again.push(read(&mut uncached, start, end).await);
        }
        again.push(uncached.limited_get_log_entries(start, 21).await.expect("read"));
    }
    assert_eq!(everything, again);
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

/// Replication reads one append's worth at a time: at most `APPEND_BYTES_MAX` bytes of entries
/// (so an append always fits one gRPC message), at least one entry, the whole range when small.
#[tokio::test]
async fn an_append_s_entries_fit_one_message() {
    let dir = TempDir::new().expect("temp dir");
    let mut store = RocksLogStore::open(dir.path()).expect("opens");
    let blob = "v".repeat(200_000);
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: p, annotations: {{a: {blob}}}}}\nspec: {{containers: [{{name: c, image: x}}]}}"
    );
    let pod = orch_core::parse_manifests(&manifest).expect("valid").remove(0);
    let request = |serial| orch_core::Request {
        client: orch_core::ClientId(1),
        serial,
        acked_below: 0,
        retry: false,
        command: orch_core::Command::Create(pod.clone()),
    };
    // 40 entries of ten such pods, each just under ENTRY_BYTES_MAX: 80 MB in all.
    let entries: Vec<_> = (1..=40u64)
        .map(|i| {
            let batch = orch_core::Entry::new(1, (0..10).map(|j| request(i * 10 + j)).collect());
            assert!(orch_core::codec::encode_entry(&batch).is_ok());
            openraft::Entry { log_id: log_id::<TypeConfig>(1, 0, i), payload: openraft::EntryPayload::Normal(batch) }
        })
        .collect();
    let (tx, rx) = TypeConfig::oneshot();
    store.append(entries, IOFlushed::Signal(tx)).await.expect("append");
    rx.await.expect("flushed").expect("durable");
    let mut reader = store.get_log_reader().await;
    let mut start = 1;
    let mut appends = 0;
    while start <= 40 {
        let got = reader.limited_get_log_entries(start, 41).await.expect("read");
        assert!(!got.is_empty());
        let bytes: usize = got
            .iter()
            .map(|e| orch_raft::codec::encode_entry(e).len() + orch_raft::grpc::ENTRY_FRAMING_BYTES_MAX)
            .sum();
        assert!(bytes <= orch_raft::grpc::APPEND_BYTES_MAX, "{} entries, {bytes} bytes", got.len());
        assert_eq!(got[0].log_id.index, start);
        start += got.len() as u64;
        appends += 1;
    }
    assert!(appends >= 3, "80 MB in {appends} appends");
    assert_eq!(reader.limited_get_log_entries(5, 7).await.expect("read").len(), 2);
}

/// The durable index follows the syncs: an append counts once its sync completed, a
/// truncation (a synced write) sets it to the cut, and a reopened log is durable whole.
#[tokio::test]
async fn the_durable_index_follows_syncs_truncations_and_reopens() {
    let dir = TempDir::new().expect("temp dir");
    {
        let mut store = RocksLogStore::open(dir.path()).expect("opens");
        let durable = store.durable_index();
        assert_eq!(durable.below(), 0, "nothing is durable in an empty log");
        append_durably(&mut store, 1..=5).await;
        // The callback completes after the index is raised, in the same sync.
        assert_eq!(durable.below(), 6);
        store.truncate_after(Some(log_id::<TypeConfig>(1, 0, 3))).await.expect("truncates");
        assert_eq!(durable.below(), 4);
        append_durably(&mut store, 4..=6).await;
        assert_eq!(durable.below(), 7);
    }
    let store = RocksLogStore::open(dir.path()).expect("reopens");
    assert_eq!(store.durable_index().below(), 7);
}
