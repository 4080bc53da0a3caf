//! What the agent reads off its host: cores, memory, name.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_read_from_meminfo() {
        assert_eq!(parse_mem_total("MemTotal:       24594476 kB\nMemFree: 1 kB\n"), Some(24_594_476 * 1024));
        assert_eq!(parse_mem_total("nothing"), None);
        assert!(cores() >= 1);
    }
}
