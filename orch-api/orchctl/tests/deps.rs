//! orchctl is a client: nothing it links may pull in the storage engine or the Raft crate.

use std::process::Command;

/// `cargo tree` of the orchctl package: its normal and build dependencies, one name per line.
fn dependency_tree() -> String {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let out = Command::new(env!("CARGO"))
        .args(["tree", "--offline", "--manifest-path", manifest, "-p", "orchctl"])
        .args(["-e", "normal,build", "--prefix", "none", "--format", "{p}"])
        .output()
        .expect("cargo runs");
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn orchctl_links_no_rocksdb_and_no_raft() {
    let tree = dependency_tree();
    let names: Vec<&str> = tree.lines().filter_map(|l| l.split_whitespace().next()).collect();
    // The tree is the real one: it holds the API client and the manifest parser.
    for wanted in ["orchctl", "orch-api", "orch-core", "tonic"] {
        assert!(names.contains(&wanted), "{wanted} missing from:\n{tree}");
    }
    for banned in ["rocksdb", "librocksdb-sys", "orch-raft", "orch-daemon", "openraft"] {
        assert!(!names.contains(&banned), "orchctl depends on {banned}:\n{tree}");
    }
}
