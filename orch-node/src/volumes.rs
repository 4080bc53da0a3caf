//! A pod's volumes on the node: `<pod dir>/volumes/<name>`, bind-mounted at each container's
//! `mountPath` in the run's own mount namespace ([`crate::exec`]).
//!
//! - `emptyDir`: a directory (on a tmpfs of `sizeLimit` for `medium: Memory`).
//! - `configMap`, `secret`: the projected files, written as the kubelet's atomic writer does:
//!   the files of one version in a directory `..v<generation>`, a symlink `..data` to it
//!   swapped by a rename, and each top-level name a symlink into `..data`. A reader sees one
//!   version or the next, never a mix. A Secret's volume is a tmpfs (its values never touch
//!   the disk), where the agent may mount one (root); elsewhere a directory of mode 0700,
//!   said once in the log.
//!
//! The mount path is on the node's own filesystem (the process runtime runs commands from
//! it): one that does not exist is made, as an empty directory, and stays.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use orch_core::agent::{VolumeFile, VolumeSource, Volumes};
use orch_core::core_v1::{Container, PodSpec};

/// The symlink to the current version.
const DATA: &str = "..data";

/// The directory of the pod's volume `name`.
pub fn dir(pod_dir: &Path, name: &str) -> PathBuf {
    pod_dir.join("volumes").join(name)
}

/// Whether `path` is a mount point (on another device than its parent).
fn is_mount_point(path: &Path) -> bool {
    let (Ok(me), Some(Ok(parent))) = (std::fs::metadata(path), path.parent().map(std::fs::metadata)) else {
        return false;
    };
    me.dev() != parent.dev()
}

/// Mounts a tmpfs of `size` bytes at `path`; false where the agent may not (not root), said
/// once.
fn mount_tmpfs(path: &Path, size: Option<u64>, mode: u32) -> bool {
    if is_mount_point(path) {
        return true;
    }
    let mut options = format!("mode={mode:o}");
    if let Some(size) = size {
        options.push_str(&format!(",size={size}"));
    }
    let flags = nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV;
    match nix::mount::mount(Some("tmpfs"), path, Some("tmpfs"), flags, Some(options.as_str())) {
        Ok(()) => true,
        Err(e) => {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!(
                    error = %e,
                    "cannot mount a tmpfs (the agent is not root?): Secret and Memory volumes are directories on the disk"
                );
            });
            false
        }
    }
}

/// Puts the pod's volumes in place as of `volumes`: makes each one that is not there yet
/// and writes the files of ConfigMap and Secret volumes.
///
/// # Errors
/// A directory, mount or file that could not be made.
pub fn set_up(pod_dir: &Path, volumes: &Volumes) -> Result<(), String> {
    for v in &volumes.volumes {
        let path = dir(pod_dir, &v.name);
        let fresh = !path.exists();
        std::fs::create_dir_all(&path).map_err(|e| format!("making volume {:?}: {e}", v.name))?;
        match &v.source {
            VolumeSource::EmptyDir { memory, size_limit } => {
                if fresh {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))
                        .map_err(|e| format!("volume {:?}: {e}", v.name))?;
                }
                if *memory {
                    let size = size_limit.and_then(|s| u64::try_from(s).ok()).filter(|s| *s > 0);
                    mount_tmpfs(&path, size, 0o777);
                }
            }
            VolumeSource::Files { secret, files } => {
                // No size of its own (tmpfs' default, half the memory): a Secret of many small
                // keys takes a page each, twice during a swap.
                if *secret && !mount_tmpfs(&path, None, 0o755) {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))
                        .map_err(|e| format!("volume {:?}: {e}", v.name))?;
                }
                write_files(&path, volumes.generation, files).map_err(|e| format!("volume {:?}: {e}", v.name))?;
            }
        }
    }
    Ok(())
}

/// Writes one version of a volume's files atomically (see the module's doc); nothing when
/// the current version already holds them.
///
/// # Errors
/// An IO error.
pub fn write_files(path: &Path, generation: u64, files: &[VolumeFile]) -> std::io::Result<()> {
    let mut wanted = files.to_vec();
    wanted.sort_by(|a, b| a.path.cmp(&b.path));
    if current_files(path).is_some_and(|now| now == wanted) {
        return Ok(());
    }
    // Never the name of the current version (a restarted agent counts generations from 1
    // again): the process and a counter make it new.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let version = format!("..v{generation}_{}_{n}", std::process::id());
    let target = path.join(&version);
    if target.exists() {
        std::fs::remove_dir_all(&target)?;
    }
    std::fs::create_dir(&target)?;
    for f in files {
        let file = target.join(&f.path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut out = std::fs::OpenOptions::new().write(true).create_new(true).mode(f.mode).open(&file)?;
        out.write_all(&f.data)?;
        out.sync_all()?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(f.mode))?;
    }
    let tmp = path.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&version, &tmp)?;
    std::fs::rename(&tmp, path.join(DATA))?;
    // The names a reader sees: a symlink per top-level entry into `..data`.
    let top: std::collections::BTreeSet<&str> =
        files.iter().filter_map(|f| f.path.split('/').next()).filter(|s| !s.is_empty()).collect();
    for name in &top {
        let link = path.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new(DATA).join(name), &link)?;
        }
    }
    for entry in std::fs::read_dir(path)?.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == DATA || name == version.as_str() {
            continue;
        }
        if name.starts_with("..") {
            let _ = std::fs::remove_dir_all(entry.path());
        } else if !top.contains(name.as_ref()) && entry.file_type().is_ok_and(|t| t.is_symlink()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// The files of a volume's current version, if it has one.
fn current_files(path: &Path) -> Option<Vec<VolumeFile>> {
    let root = path.join(DATA);
    let root = root.canonicalize().ok()?;
    let mut out = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).ok()?.flatten() {
            let meta = entry.metadata().ok()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                let rel = entry.path().strip_prefix(&root).ok()?.to_string_lossy().into_owned();
                let data = std::fs::read(entry.path()).ok()?;
                out.push(VolumeFile { path: rel, data, mode: meta.permissions().mode() & 0o777 });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Some(out)
}

/// Unmounts the pod's tmpfs volumes (before its directory is removed).
pub fn tear_down(pod_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(pod_dir.join("volumes")) else { return };
    for e in entries.flatten() {
        let path = e.path();
        if is_mount_point(&path)
            && let Err(err) = nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH)
        {
            tracing::warn!(path = %path.display(), error = %err, "unmounting a pod volume failed");
        }
    }
}

/// The bind mounts of `container`'s volume mounts: (the volume's directory, the mount path,
/// read-only). ConfigMap and Secret volumes are read-only, as Kubernetes mounts them. A mount
/// path missing on the node is made.
///
/// # Errors
/// A mount path that could not be made, or names no volume of the pod.
pub fn mounts(pod_dir: &Path, spec: &PodSpec, container: &Container) -> Result<Vec<(PathBuf, PathBuf, bool)>, String> {
    let mut out = Vec::new();
    for m in &container.volume_mounts {
        let Some(v) = spec.volumes.iter().find(|v| v.name == m.name) else {
            return Err(format!(
                "volume mount {:?}: the pod has no volume {:?}",
                m.mount_path.as_str(),
                m.name.as_str()
            ));
        };
        let target = PathBuf::from(m.mount_path.as_str());
        if !target.exists() {
            std::fs::create_dir_all(&target).map_err(|e| format!("making mount path {}: {e}", target.display()))?;
        }
        let read_only = m.read_only == Some(true) || v.config_map.is_some() || v.secret.is_some();
        out.push((dir(pod_dir, &v.name), target, read_only));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, data: &str) -> VolumeFile {
        VolumeFile { path: path.to_owned(), data: data.as_bytes().to_vec(), mode: 0o644 }
    }

    #[test]
    fn a_new_version_replaces_the_files_as_a_whole() {
        let tmp = std::env::temp_dir().join(format!("orch-volume-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).unwrap();
        write_files(&tmp, 1, &[file("a", "1"), file("sub/b", "2")]).unwrap();
        assert_eq!(std::fs::read_to_string(tmp.join("a")).unwrap(), "1");
        assert_eq!(std::fs::read_to_string(tmp.join("sub/b")).unwrap(), "2");
        write_files(&tmp, 2, &[file("sub/b", "3"), file("c", "4")]).unwrap();
        assert!(!tmp.join("a").exists(), "a key that went is no file any more");
        assert_eq!(std::fs::read_to_string(tmp.join("sub/b")).unwrap(), "3");
        assert_eq!(std::fs::read_to_string(tmp.join("c")).unwrap(), "4");
        // One version directory is left, the current one.
        let versions: Vec<String> = std::fs::read_dir(&tmp)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("..v"))
            .collect();
        assert_eq!(versions.len(), 1);
        assert!(versions[0].starts_with("..v2_"), "{versions:?}");
        assert_eq!(std::fs::read_link(tmp.join(DATA)).unwrap(), PathBuf::from(&versions[0]));
        // The same files again: nothing is written.
        write_files(&tmp, 3, &[file("c", "4"), file("sub/b", "3")]).unwrap();
        assert_eq!(std::fs::read_link(tmp.join(DATA)).unwrap(), PathBuf::from(&versions[0]));
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
