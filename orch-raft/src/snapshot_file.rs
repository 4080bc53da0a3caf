//! Snapshot files, and a snapshot's bytes as openraft moves them: kept, sent and received
//! through files, so that no whole copy of a snapshot sits in memory while it is in transit or
//! kept. (Building one encodes the state in memory, and installing one decodes it from memory:
//! the state itself lives in memory.)
//!
//! A snapshot file: `ORCHRSNP`, format version (u8), BLAKE3 digest of the rest (32 bytes),
//! meta length (u32 LE), meta ([`crate::codec::encode_snapshot_meta`]), then the state as
//! `State::to_snapshot` bytes (which carry their own digest).
//!
//! [`SnapshotBytes`] is openraft's snapshot data: the state bytes, in memory (a store without a
//! directory: tests and the simulator) or as the state range of an open snapshot file. A store's
//! current snapshot is such a file, which a leader sends chunk by chunk. A follower receives a
//! snapshot with a [`SnapshotSink`]: as the chunks arrive they go into a temporary snapshot file
//! in the store's directory, which the install then renames into place (no second copy). A
//! temporary file nobody installs is removed when its last handle goes, and those a crash left
//! behind when the store next opens.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use openraft::alias::SnapshotMetaOf;
use orch_core::State;

use crate::codec;
use crate::types::TypeConfig;

type C = TypeConfig;

const MAGIC: &[u8; 8] = b"ORCHRSNP";
/// The snapshot file in a store's directory.
pub(crate) const SNAPSHOT_FILE: &str = "snapshot.bin";
/// Magic, version and digest.
const HEADER_BYTES: usize = 8 + 1 + 32;
/// The most memory a sink without a directory reserves ahead of the bytes; beyond it the
/// buffer grows as they arrive.
const MEMORY_RESERVE_MAX: usize = 64 << 20;

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// A snapshot's state bytes (`State::to_snapshot`): openraft's snapshot data. Clones share
/// them, and the state decoded from them once it was checked ([`SnapshotBytes::decode`]).
#[derive(Clone)]
pub struct SnapshotBytes {
    source: Arc<Source>,
    decoded: Arc<Mutex<Option<State>>>,
}

/// A received snapshot's temporary file, until an install takes it.
struct Temporary {
    path: PathBuf,
    /// The meta section written into it: the install checks it is the meta it installs.
    meta_section: Vec<u8>,
}

enum Source {
    Memory(Bytes),
    File {
        file: File,
        /// Where the state bytes start in the file.
        offset: u64,
        len: u64,
        /// Set while the file is a received snapshot not yet installed: removed when the last
        /// handle goes, unless an install took it.
        temporary: Mutex<Option<Temporary>>,
    },
}

impl Drop for Source {
    fn drop(&mut self) {
        if let Source::File { temporary, .. } = self
            && let Some(temporary) = temporary.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner).take()
        {
            let _ = std::fs::remove_file(temporary.path);
        }
    }
}

impl std::fmt::Debug for SnapshotBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let place = if self.in_memory() { "memory" } else { "file" };
        write!(f, "SnapshotBytes({} bytes in {place})", self.len())
    }
}

impl SnapshotBytes {
    /// State bytes held in memory.
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        Self::with_source(Source::Memory(Bytes::from(bytes)))
    }

    fn file(file: File, offset: u64, len: u64, temporary: Option<Temporary>) -> Self {
        Self::with_source(Source::File { file, offset, len, temporary: Mutex::new(temporary) })
    }

    fn with_source(source: Source) -> Self {
        Self { source: Arc::new(source), decoded: Arc::default() }
    }

    /// How many bytes.
    pub fn len(&self) -> u64 {
        match &*self.source {
            Source::Memory(bytes) => bytes.len() as u64,
            Source::File { len, .. } => *len,
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the bytes are in memory rather than in a file.
    pub fn in_memory(&self) -> bool {
        matches!(&*self.source, Source::Memory(_))
    }

    /// `len` bytes from `pos`: a slice of the bytes in memory, or a read of the file (which
    /// blocks: see [`SnapshotBytes::read_chunk`]).
    ///
    /// # Errors
    /// When the range is beyond the bytes, or the file cannot be read.
    pub fn read(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        let end = pos.checked_add(len as u64).filter(|end| *end <= self.len());
        let Some(end) = end else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "read beyond the snapshot's bytes"));
        };
        match &*self.source {
            Source::Memory(bytes) => Ok(bytes.slice(usize::try_from(pos).unwrap_or(usize::MAX)..end as usize)),
            Source::File { file, offset, .. } => {
                let mut buf = vec![0; len];
                file.read_exact_at(&mut buf, offset + pos)?;
                Ok(Bytes::from(buf))
            }
        }
    }

    /// As [`SnapshotBytes::read`], off the async runtime's threads for a file.
    ///
    /// # Errors
    /// As [`SnapshotBytes::read`].
    pub async fn read_chunk(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        if self.in_memory() {
            return self.read(pos, len);
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.read(pos, len)).await.map_err(io::Error::other)?
    }

    /// Runs `f` on all the bytes: in place in memory, read into memory from a file (which
    /// blocks).
    ///
    /// # Errors
    /// When the file cannot be read, or there is no memory for it.
    pub fn with_all<T>(&self, f: impl FnOnce(&[u8]) -> T) -> io::Result<T> {
        match &*self.source {
            Source::Memory(bytes) => Ok(f(bytes)),
            Source::File { file, offset, len, .. } => {
                let len = usize::try_from(*len).map_err(|_| invalid("snapshot larger than memory"))?;
                // An allocation that fails is an error, not an abort.
                let mut buf = Vec::new();
                buf.try_reserve_exact(len).map_err(|e| io::Error::new(io::ErrorKind::OutOfMemory, e))?;
                buf.resize(len, 0);
                file.read_exact_at(&mut buf, *offset)?;
                Ok(f(&buf))
            }
        }
    }

    /// Decodes and checks the state (which blocks), and keeps it for the install, which then
    /// does not decode again. A receiver calls it before handing the snapshot to openraft, for
    /// which an install that fails is a storage error that stops the node: bytes a peer sent
    /// are refused here instead.
    ///
    /// # Errors
    /// When the bytes cannot be read or are no valid state.
    pub fn decode(&self) -> io::Result<()> {
        let state = self.with_all(State::from_snapshot)?.map_err(|e| invalid(e.to_string()))?;
        *crate::lock(&self.decoded) = Some(state);
        Ok(())
    }

    /// The state [`SnapshotBytes::decode`] kept, taken.
    pub(crate) fn take_decoded(&self) -> Option<State> {
        crate::lock(&self.decoded).take()
    }

    /// The temporary file of a received snapshot, if these bytes are one in `dir` with `meta`
    /// not yet installed; from now on the caller owns it.
    fn take_temporary_in(&self, dir: &Path, meta: &[u8]) -> Option<PathBuf> {
        let Source::File { temporary, .. } = &*self.source else { return None };
        let mut temporary = crate::lock(temporary);
        let ours = temporary.as_ref().is_some_and(|t| t.path.parent() == Some(dir) && t.meta_section == meta);
        if ours { temporary.take().map(|t| t.path) } else { None }
    }
}

/// Distinguishes the temporary files of writes in flight.
static TEMPORARY_FILES: AtomicU64 = AtomicU64::new(0);

/// A new temporary snapshot file in `dir`, open to read and write.
fn temporary(dir: &Path) -> io::Result<(PathBuf, File)> {
    let n = TEMPORARY_FILES.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!("{SNAPSHOT_FILE}.{}.{n}.tmp", std::process::id()));
    let file = OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
    Ok((path, file))
}

/// Removes the temporary files of snapshot writes and receives that a crash interrupted.
pub(crate) fn remove_temporary_files(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with(&format!("{SNAPSHOT_FILE}.")) && name.ends_with(".tmp") {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// The meta as a snapshot file holds it: its length (u32 LE), then its encoding.
fn meta_section(meta: &SnapshotMetaOf<C>) -> io::Result<Vec<u8>> {
    let meta = codec::encode_snapshot_meta(meta);
    let len = u32::try_from(meta.len()).map_err(|_| invalid("snapshot meta larger than 4 GiB"))?;
    let mut section = Vec::with_capacity(4 + meta.len());
    section.extend_from_slice(&len.to_le_bytes());
    section.extend_from_slice(&meta);
    Ok(section)
}

fn header(digest: blake3::Hash) -> [u8; HEADER_BYTES] {
    let mut header = [0; HEADER_BYTES];
    header[..8].copy_from_slice(MAGIC);
    header[8] = codec::FORMAT_VERSION;
    header[9..].copy_from_slice(digest.as_bytes());
    header
}

/// Syncs `dir`, so that a rename in it is durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes the snapshot file of `dir` for `meta` and `state` atomically and durably (a temporary
/// file of its own, fsync, rename, fsync of the directory); returns its state bytes.
pub(crate) fn write_file(dir: &Path, meta: &SnapshotMetaOf<C>, state: &[u8]) -> io::Result<SnapshotBytes> {
    let section = meta_section(meta)?;
    let digest = blake3::Hasher::new().update(&section).update(state).finalize();
    let (path, mut file) = temporary(dir)?;
    let written = (|| {
        file.write_all(&header(digest))?;
        file.write_all(&section)?;
        file.write_all(state)?;
        file.sync_all()?;
        std::fs::rename(&path, dir.join(SNAPSHOT_FILE))?;
        sync_dir(dir)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok(SnapshotBytes::file(file, (HEADER_BYTES + section.len()) as u64, state.len() as u64, None))
}

/// Makes `bytes`, when they are a received snapshot's temporary file in `dir` written with
/// `meta`, the snapshot file of `dir` (rename, fsync of the directory; the file was synced when
/// it was received). Returns false when they are not.
pub(crate) fn rename_into_place(dir: &Path, meta: &SnapshotMetaOf<C>, bytes: &SnapshotBytes) -> io::Result<bool> {
    let Some(path) = bytes.take_temporary_in(dir, &meta_section(meta)?) else { return Ok(false) };
    if let Err(e) = std::fs::rename(&path, dir.join(SNAPSHOT_FILE)) {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    sync_dir(dir)?;
    Ok(true)
}

/// The snapshot file of a store's directory, read and checked.
pub(crate) struct Loaded {
    pub(crate) meta: SnapshotMetaOf<C>,
    /// The whole file.
    bytes: Vec<u8>,
    /// Where the state bytes start in it.
    state_at: usize,
    /// The state bytes as a range of the open file.
    pub(crate) kept: SnapshotBytes,
}

impl Loaded {
    /// The state bytes.
    pub(crate) fn state(&self) -> &[u8] {
        &self.bytes[self.state_at..]
    }
}

/// Reads the snapshot file of `dir`, if there is one, checking its magic, version and digest.
pub(crate) fn read_file(dir: &Path) -> io::Result<Option<Loaded>> {
    let file = match File::open(dir.join(SNAPSHOT_FILE)) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut &file, &mut bytes)?;
    let (meta, state_at) = decode_file(&bytes)?;
    let kept = SnapshotBytes::file(file, state_at as u64, (bytes.len() - state_at) as u64, None);
    Ok(Some(Loaded { meta, bytes, state_at, kept }))
}

/// The meta of a snapshot file's bytes and where its state bytes start.
fn decode_file(bytes: &[u8]) -> io::Result<(SnapshotMetaOf<C>, usize)> {
    if bytes.len() < HEADER_BYTES + 4 || &bytes[..8] != MAGIC {
        return Err(invalid("snapshot file: bad magic or short header"));
    }
    if bytes[8] != codec::FORMAT_VERSION {
        return Err(invalid(format!("snapshot file: unknown format version {}", bytes[8])));
    }
    let body = &bytes[HEADER_BYTES..];
    if blake3::hash(body).as_bytes() != &bytes[9..HEADER_BYTES] {
        return Err(invalid("snapshot file: digest mismatch"));
    }
    let mut len = [0u8; 4];
    len.copy_from_slice(&body[..4]);
    let meta_len = u32::from_le_bytes(len) as usize;
    let meta = body.get(4..4 + meta_len).ok_or_else(|| invalid("snapshot file: meta cut short"))?;
    Ok((codec::decode_snapshot_meta(meta)?, HEADER_BYTES + 4 + meta_len))
}

/// Receives a snapshot's state bytes as they arrive: into a temporary snapshot file in a
/// store's directory, or into memory for a store without one. Dropped unfinished, it removes
/// its file. Get one from [`crate::StateMachineStore::snapshot_sink`].
pub struct SnapshotSink {
    received: u64,
    target: Option<Target>,
}

enum Target {
    Memory(Vec<u8>),
    File { file: File, path: PathBuf, hasher: Box<blake3::Hasher>, meta_section: Vec<u8> },
}

impl Drop for SnapshotSink {
    fn drop(&mut self) {
        if let Some(Target::File { path, .. }) = self.target.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl SnapshotSink {
    /// A sink for a snapshot with `meta` of `total` bytes, writing into `dir` if given.
    pub(crate) fn new(dir: Option<&Path>, meta: &SnapshotMetaOf<C>, total: u64) -> io::Result<Self> {
        let target = match dir {
            None => {
                Target::Memory(Vec::with_capacity(usize::try_from(total).unwrap_or(usize::MAX).min(MEMORY_RESERVE_MAX)))
            }
            Some(dir) => {
                let section = meta_section(meta)?;
                let (path, mut file) = temporary(dir)?;
                // The header is written last, once the digest is known.
                if let Err(e) = file.write_all(&[0; HEADER_BYTES]).and_then(|()| file.write_all(&section)) {
                    let _ = std::fs::remove_file(&path);
                    return Err(e);
                }
                let mut hasher = Box::new(blake3::Hasher::new());
                hasher.update(&section);
                Target::File { file, path, hasher, meta_section: section }
            }
        };
        Ok(Self { received: 0, target: Some(target) })
    }

    /// How many bytes arrived.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Whether the bytes go to a file (and so block: see [`SnapshotSink::write_chunk`]).
    pub fn to_file(&self) -> bool {
        matches!(self.target, Some(Target::File { .. }))
    }

    /// Appends `chunk`.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        match &mut self.target {
            Some(Target::Memory(buf)) => buf.extend_from_slice(chunk),
            Some(Target::File { file, hasher, meta_section, .. }) => {
                file.write_all_at(chunk, (HEADER_BYTES + meta_section.len()) as u64 + self.received)?;
                hasher.update(chunk);
            }
            None => return Err(io::Error::other("the sink was finished")),
        }
        self.received += chunk.len() as u64;
        Ok(())
    }

    /// As [`SnapshotSink::write`], off the async runtime's threads for a file.
    ///
    /// # Errors
    /// As [`SnapshotSink::write`].
    pub async fn write_chunk(mut self, chunk: Bytes) -> io::Result<Self> {
        if !self.to_file() {
            self.write(&chunk)?;
            return Ok(self);
        }
        tokio::task::spawn_blocking(move || self.write(&chunk).map(|()| self)).await.map_err(io::Error::other)?
    }

    /// Ends the stream: a file gets its header and is synced.
    ///
    /// # Errors
    /// When the file cannot be written or synced.
    pub fn finish(mut self) -> io::Result<SnapshotBytes> {
        match self.target.take() {
            Some(Target::Memory(buf)) => Ok(SnapshotBytes::from_vec(buf)),
            Some(Target::File { file, path, hasher, meta_section }) => {
                let done = file.write_all_at(&header(hasher.finalize()), 0).and_then(|()| file.sync_all());
                let offset = (HEADER_BYTES + meta_section.len()) as u64;
                let bytes = SnapshotBytes::file(file, offset, self.received, Some(Temporary { path, meta_section }));
                done.map(|()| bytes)
            }
            None => Err(io::Error::other("the sink was finished")),
        }
    }

    /// As [`SnapshotSink::finish`], off the async runtime's threads for a file.
    ///
    /// # Errors
    /// As [`SnapshotSink::finish`].
    pub async fn finish_async(self) -> io::Result<SnapshotBytes> {
        if !self.to_file() {
            return self.finish();
        }
        tokio::task::spawn_blocking(move || self.finish()).await.map_err(io::Error::other)?
    }
}

#[cfg(test)]
mod tests {
    use openraft::impls::leader_id_adv::LeaderId;
    use openraft::{LogId, StoredMembership};

    use super::*;

    fn meta(index: u64) -> SnapshotMetaOf<C> {
        openraft::storage::SnapshotMeta {
            last_log_id: Some(LogId::new(LeaderId { term: 1, node_id: 1 }, index)),
            last_membership: StoredMembership::default(),
        }
    }

    fn files(dir: &Path) -> Vec<(String, u64)> {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .expect("lists")
            .map(|e| {
                let e = e.expect("entry");
                (e.file_name().to_string_lossy().into_owned(), e.metadata().expect("metadata").len())
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_received_snapshot_goes_to_a_file_as_it_arrives_and_is_renamed_into_place() {
        let dir = tempfile::tempdir().expect("dir");
        let state: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut sink = SnapshotSink::new(Some(dir.path()), &meta(7), state.len() as u64).expect("sink");
        assert!(sink.to_file());
        for (i, chunk) in state.chunks(30_000).enumerate() {
            sink.write(chunk).expect("writes");
            // The bytes are in the file as they arrive (after the header and the meta).
            let on_disk = files(dir.path());
            assert_eq!(on_disk.len(), 1, "{on_disk:?}");
            assert!(on_disk[0].0.ends_with(".tmp"));
            assert!(on_disk[0].1 >= (30_000 * i + chunk.len()) as u64, "{on_disk:?}");
        }
        let bytes = sink.finish().expect("finishes");
        assert_eq!((bytes.in_memory(), bytes.len()), (false, state.len() as u64));
        assert_eq!(bytes.read(99_990, 10).expect("reads")[..], state[99_990..]);
        assert!(bytes.read(99_990, 11).is_err(), "beyond the bytes");
        let inode = |path: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).expect("metadata"));
        let received = dir.path().join(&files(dir.path())[0].0);
        let received_inode = inode(&received);
        // Only with the meta it was received with, and only in its own directory.
        assert!(!rename_into_place(dir.path(), &meta(8), &bytes).expect("no error"), "another meta");
        let other = tempfile::tempdir().expect("dir");
        assert!(!rename_into_place(other.path(), &meta(7), &bytes).expect("no error"), "another directory");
        assert!(rename_into_place(dir.path(), &meta(7), &bytes).expect("renames"));
        // The same file, moved rather than copied; its digest and meta check.
        assert_eq!(
            files(dir.path()),
            [(SNAPSHOT_FILE.to_owned(), std::fs::metadata(dir.path().join(SNAPSHOT_FILE)).expect("m").len())]
        );
        assert_eq!(inode(&dir.path().join(SNAPSHOT_FILE)), received_inode);
        let loaded = read_file(dir.path()).expect("reads").expect("a snapshot");
        assert_eq!((&loaded.meta, loaded.state()), (&meta(7), &state[..]));
        assert!(!rename_into_place(dir.path(), &meta(7), &bytes).expect("no error"), "once only");
        drop(bytes);
        assert!(dir.path().join(SNAPSHOT_FILE).exists(), "an installed file stays");
    }

    #[test]
    fn a_snapshot_received_but_never_installed_leaves_no_file() {
        let dir = tempfile::tempdir().expect("dir");
        let mut sink = SnapshotSink::new(Some(dir.path()), &meta(3), 10).expect("sink");
        sink.write(b"12345").expect("writes");
        drop(sink);
        assert_eq!(files(dir.path()), [], "a stream cut short");
        let mut sink = SnapshotSink::new(Some(dir.path()), &meta(3), 10).expect("sink");
        sink.write(b"1234567890").expect("writes");
        let bytes = sink.finish().expect("finishes");
        let copy = bytes.clone();
        drop(bytes);
        assert_eq!(files(dir.path()).len(), 1, "a handle remains");
        drop(copy);
        assert_eq!(files(dir.path()), [], "openraft dropped it");
    }

    #[test]
    fn written_files_read_back_and_damage_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        assert!(read_file(dir.path()).expect("no error").is_none());
        let kept = write_file(dir.path(), &meta(9), b"state bytes").expect("writes");
        assert_eq!(kept.with_all(<[u8]>::to_vec).expect("reads"), b"state bytes");
        assert_eq!(files(dir.path()).len(), 1);
        let path = dir.path().join(SNAPSHOT_FILE);
        let mut raw = std::fs::read(&path).expect("reads");
        let last = raw.len() - 1;
        raw[last] ^= 1;
        std::fs::write(&path, &raw).expect("writes");
        let err = read_file(dir.path()).err().expect("damaged");
        assert_eq!(err.to_string(), "snapshot file: digest mismatch");
        let mut sink = SnapshotSink::new(None, &meta(1), 3).expect("sink");
        sink.write(b"abc").expect("writes");
        let bytes = sink.finish().expect("finishes");
        assert!(bytes.in_memory());
        assert_eq!(bytes.read(1, 2).expect("reads")[..], *b"bc");
    }
}
