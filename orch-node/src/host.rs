//! What the agent reads off its host: cores, memory, name, system info.

/// The kubelet's default `maxPods`.
pub const DEFAULT_MAX_PODS: i64 = 110;

/// The host's cores (what this process may run on).
pub fn cores() -> i64 {
    std::thread::available_parallelism().map_or(1, |n| i64::try_from(n.get()).unwrap_or(1))
}

/// The host's memory in bytes (`MemTotal` of `/proc/meminfo`), if it can be read.
pub fn memory_bytes() -> Option<i64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_total(&text)
}

fn parse_mem_total(meminfo: &str) -> Option<i64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The host's name, lowercased (a node name must be a DNS subdomain).
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .map(|h| h.to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// What the node runs, for the Node's `status.nodeInfo`: machine and boot ids, kernel, OS,
/// architecture, and this agent's version (the runtime is the process runtime: no images).
pub fn node_info() -> orch_core::core_v1::NodeSystemInfo {
    let read = |path: &str| std::fs::read_to_string(path).map(|s| s.trim().to_owned()).unwrap_or_default();
    let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let version = env!("CARGO_PKG_VERSION");
    orch_core::core_v1::NodeSystemInfo {
        machine_id: read("/etc/machine-id").into(),
        boot_id: read("/proc/sys/kernel/random/boot_id").into(),
        kernel_version: read("/proc/sys/kernel/osrelease").into(),
        os_image: pretty_name(&os_release).unwrap_or("Linux").into(),
        operating_system: "linux".into(),
        architecture: std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64").into(),
        container_runtime_version: format!("orch-process://{version}").into(),
        kubelet_version: format!("orch-node {version}").into(),
    }
}

/// `PRETTY_NAME` of an os-release file.
fn pretty_name(os_release: &str) -> Option<&str> {
    let line = os_release.lines().find_map(|l| l.strip_prefix("PRETTY_NAME="))?;
    Some(line.trim_matches('"'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_info_names_the_os_and_the_agent() {
        assert_eq!(
            pretty_name("ID=debian\nPRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\n"),
            Some("Debian GNU/Linux 13 (trixie)")
        );
        assert_eq!(pretty_name("ID=x"), None);
        let info = node_info();
        assert_eq!(info.operating_system, "linux");
        assert!(info.kubelet_version.starts_with("orch-node "));
        assert!(!info.kernel_version.is_empty());
    }

    #[test]
    fn memory_is_read_from_meminfo() {
        assert_eq!(parse_mem_total("MemTotal:       24594476 kB\nMemFree: 1 kB\n"), Some(24_594_476 * 1024));
        assert_eq!(parse_mem_total("nothing"), None);
        assert!(cores() >= 1);
    }
}
