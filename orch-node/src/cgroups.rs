//! Resource limits through cgroups. cgroup v2 only where `/sys/fs/cgroup` itself is a cgroup2
//! mount whose controllers include `cpu` and `memory`; otherwise v1, with the `memory` and
//! `cpu` hierarchies (on a machine whose v2 mount is `/sys/fs/cgroup/unified` without those
//! controllers, v1 it is). Pod cgroups live under the agent's own cgroup, in
//! `orch-<node>/<pod uid>/<container>-<run>`, so several agents on one machine do not collide.

use std::path::{Path, PathBuf};

use orch_core::core_v1::ResourceList;
use orch_core::ids::Uid;

/// The CFS period the CPU limit is a share of (the kubelet's 100 ms).
const CFS_PERIOD_US: i64 = 100_000;
/// The largest CFS quota the kernel takes (`max_cfs_quota_period` bounds it near 2^44 us).
const CFS_QUOTA_MAX_US: i64 = 1 << 40;

/// The cgroup layout of one agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cgroups {
    v2: bool,
    /// v2: the agent's root; v1: its roots in the memory and cpu hierarchies.
    roots: Vec<PathBuf>,
}

/// The path of this process's cgroup in the hierarchy that `controller` is in (v1), or the
/// unified one (`controller` empty).
fn own_cgroup(controller: &str) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let hit = if controller.is_empty() {
            controllers.is_empty()
        } else {
            controllers.split(',').any(|c| c == controller)
        };
        hit.then(|| path.to_owned())
    })
}

impl Cgroups {
    /// The layout for the agent of node `node` under `mount` (normally `/sys/fs/cgroup`), its
    /// roots made; an error saying why none is usable.
    ///
    /// # Errors
    /// No usable hierarchy, or its roots cannot be made (not root, read-only).
    pub fn detect(mount: &Path, node: &str) -> Result<Self, String> {
        let leaf = format!("orch-{node}");
        let controllers = std::fs::read_to_string(mount.join("cgroup.controllers")).unwrap_or_default();
        let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
        let roots = if has("cpu") && has("memory") {
            let own = own_cgroup("").unwrap_or_else(|| "/".to_owned());
            // A v2 process may not sit in an inner cgroup: the pods go beside the agent's.
            let parent = Path::new(&own).parent().map_or_else(|| "/".to_owned(), |p| p.display().to_string());
            vec![mount.join(parent.trim_start_matches('/')).join(&leaf)]
        } else {
            let mut roots = Vec::new();
            for controller in ["memory", "cpu"] {
                let hierarchy = mount.join(controller);
                if !hierarchy.join("cgroup.procs").exists() {
                    return Err(format!("no cgroup v1 {controller} hierarchy at {}", hierarchy.display()));
                }
                let own = own_cgroup(controller).unwrap_or_else(|| "/".to_owned());
                roots.push(hierarchy.join(own.trim_start_matches('/')).join(&leaf));
            }
            roots
        };
        let v2 = roots.len() == 1;
        for root in &roots {
            std::fs::create_dir_all(root).map_err(|e| format!("making cgroup {}: {e}", root.display()))?;
        }
        if v2 {
            // Let the pods' cgroups have the controllers.
            let _ = std::fs::write(roots[0].join("cgroup.subtree_control"), "+cpu +memory");
        }
        Ok(Self { v2, roots })
    }

    /// Whether this is cgroup v2.
    pub fn is_v2(&self) -> bool {
        self.v2
    }

    /// The pod's cgroups (one per hierarchy).
    pub fn pod(&self, uid: Uid) -> Vec<PathBuf> {
        self.roots.iter().map(|r| r.join(uid.to_string())).collect()
    }

    /// Makes the cgroups of a container's run with its limits; their paths.
    ///
    /// # Errors
    /// A cgroup cannot be made or a limit not set.
    pub fn container(
        &self,
        uid: Uid,
        name: &str,
        attempt: u32,
        limits: &ResourceList,
    ) -> std::io::Result<Vec<PathBuf>> {
        let leaf = format!("{name}-{attempt}");
        let mut paths = Vec::new();
        for pod in self.pod(uid) {
            if self.v2 {
                std::fs::create_dir_all(&pod)?;
                let _ = std::fs::write(pod.join("cgroup.subtree_control"), "+cpu +memory");
            }
            let path = pod.join(&leaf);
            std::fs::create_dir_all(&path)?;
            paths.push(path);
        }
        let memory = limits.memory.map(|q| q.value()).filter(|b| *b > 0);
        // The kubelet's: the quota is the limit's share of the period, at least 1 ms (the
        // kernel's minimum), at most what the kernel takes.
        let cpu_quota = limits
            .cpu
            .filter(|q| q.milli_value() > 0)
            .map(|q| (q.milli_value().saturating_mul(CFS_PERIOD_US) / 1_000).clamp(1_000, CFS_QUOTA_MAX_US));
        if self.v2 {
            let path = &paths[0];
            if let Some(bytes) = memory {
                std::fs::write(path.join("memory.max"), bytes.to_string())?;
                let _ = std::fs::write(path.join("memory.swap.max"), "0");
            }
            if let Some(quota) = cpu_quota {
                std::fs::write(path.join("cpu.max"), format!("{quota} {CFS_PERIOD_US}"))?;
            }
        } else {
            if let Some(bytes) = memory {
                std::fs::write(paths[0].join("memory.limit_in_bytes"), bytes.to_string())?;
                // Without swap, over the limit is an OOM kill (as the kubelet's nodes run).
                let _ = std::fs::write(paths[0].join("memory.memsw.limit_in_bytes"), bytes.to_string());
                let _ = std::fs::write(paths[0].join("memory.swappiness"), "0");
            }
            if let Some(quota) = cpu_quota {
                std::fs::write(paths[1].join("cpu.cfs_period_us"), CFS_PERIOD_US.to_string())?;
                std::fs::write(paths[1].join("cpu.cfs_quota_us"), quota.to_string())?;
            }
        }
        Ok(paths)
    }

    /// Removes the pod's cgroups (once nothing runs in them); whether they are gone.
    pub fn remove_pod(&self, uid: Uid) -> bool {
        self.pod(uid).iter().all(|p| remove_tree(p))
    }

    /// The pods that have cgroups here.
    pub fn pods(&self) -> Vec<Uid> {
        let Some(root) = self.roots.first() else { return Vec::new() };
        let Ok(entries) = std::fs::read_dir(root) else { return Vec::new() };
        entries.flatten().filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok())).collect()
    }
}

/// Removes a cgroup and those under it (rmdir, deepest first); whether it is gone.
fn remove_tree(path: &Path) -> bool {
    if let Ok(entries) = std::fs::read_dir(path) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    match std::fs::remove_dir(path) {
        Ok(()) => true,
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}
