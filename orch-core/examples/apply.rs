//! Applies manifests to an in-process orch-core state machine and prints what it holds,
//! as `orchctl apply` then `orchctl get` will once the daemon exists.
//!
//! ```text
//! cargo run -p orch-core --example apply -- examples/hello.yaml
//! ```
//!
//! Each file becomes one log entry (an atomic batch of creates, or updates for objects that
//! exist); validation errors are printed with their field paths and nothing of that file is
//! applied. The final state is round-tripped through a snapshot and its digest printed.
#![allow(clippy::print_stdout)]

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use orch_core::{ClientId, Command, Entry, EventType, Kind, Object, Request, State, parse_manifests};

fn age(state: &State, obj: &Object) -> String {
    let created = obj.meta().creation_timestamp.map_or(0, |t| t.as_millis());
    let seconds = (state.clock().as_millis() - created) / 1000;
    format!("{seconds}s")
}

fn main() -> ExitCode {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    if paths.is_empty() {
        eprintln!("usage: apply FILE.yaml [FILE.yaml ...]");
        return ExitCode::from(2);
    }
    let mut state = State::new();
    let mut failed = false;
    for (i, path) in paths.iter().enumerate() {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {path}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let objects = match parse_manifests(&text) {
            Ok(o) => o,
            Err(e) => {
                eprintln!("error: {path}: {e}");
                failed = true;
                continue;
            }
        };
        let commands = objects
            .into_iter()
            .map(|o| if state.get(&o.key()).is_some() { Command::Update(o) } else { Command::Create(o) })
            .collect();
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let entry = Entry::new(now_ms, vec![Request::new(ClientId(1), i as u64 + 1, Command::Batch(commands))]);
        let out = state.apply(state.applied_index() + 1, entry);
        match &out.outcomes[0] {
            Ok(success) => {
                for change in &success.changes {
                    println!("{}/{} {}", change.key.kind.as_str().to_lowercase(), change.key.name, change.action);
                }
            }
            Err(e) => {
                eprintln!("error: {path}: {e}");
                failed = true;
            }
        }
        for ev in out.events.iter().filter(|e| e.event_type != EventType::Modified) {
            let meta = ev.object.meta();
            println!("  event {:?} {} {} at revision {}", ev.event_type, ev.object.kind(), meta.name, ev.revision);
        }
    }
    println!();
    println!("{:<12} {:<10} {:<24} {:<10} {:<6}", "KIND", "NAMESPACE", "NAME", "REVISION", "AGE");
    for kind in Kind::ALL {
        for obj in state.list(kind, None) {
            let meta = obj.meta();
            println!(
                "{:<12} {:<10} {:<24} {:<10} {:<6}",
                kind.as_str(),
                meta.namespace_str(),
                meta.name,
                meta.revision().0,
                age(&state, obj)
            );
        }
    }
    let snapshot = state.to_snapshot();
    match State::from_snapshot(&snapshot) {
        Ok(restored) if restored == state => {
            println!("\nsnapshot: {} bytes, digest {}", snapshot.len(), state.digest());
        }
        Ok(_) => {
            eprintln!("error: the snapshot did not restore the same state");
            failed = true;
        }
        Err(e) => {
            eprintln!("error: snapshot: {e}");
            failed = true;
        }
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
