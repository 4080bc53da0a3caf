//! Cross-crate integration tests: manifests from `examples/` go through parsing, validation
//! and the state machine as a user's `apply` would.

use orch_core::{ClientId, Command, Entry, Kind, Request, State, parse_manifests};

#[test]
fn example_manifests_apply_cleanly() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .expect("examples directory")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no example manifests found in {dir}");
    let mut state = State::new();
    for (i, path) in paths.iter().enumerate() {
        let text = std::fs::read_to_string(path).expect("readable manifest");
        let objects = parse_manifests(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let requests = objects
            .into_iter()
            .enumerate()
            .map(|(j, obj)| Request {
                client: ClientId(7),
                serial: (i * 1000 + j + 1) as u64,
                command: Command::Create(obj),
            })
            .collect();
        let out = state.apply(i as u64 + 1, Entry { timestamp_ms: 1_000, requests });
        for outcome in &out.outcomes {
            assert!(outcome.is_ok(), "{}: {outcome:?}", path.display());
        }
    }
    assert!(state.list(Kind::Deployment, None).next().is_some());
    state.check_invariants().expect("invariants hold");
}
