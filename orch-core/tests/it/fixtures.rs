//! Builders for the objects and entries the tests use.

use orch_core::{ClientId, Command, Entry, Object, Outcome, Request, State, parse_manifests};

/// One object from a YAML manifest.
pub(crate) fn obj(yaml: &str) -> Object {
    let mut objects = parse_manifests(yaml).unwrap_or_else(|e| panic!("fixture does not parse: {e}\n{yaml}"));
    assert_eq!(objects.len(), 1);
    objects.remove(0)
}

pub(crate) fn pod(namespace: &str, name: &str) -> Object {
    obj(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {namespace}, labels: {{app: web}}}}\n\
         spec:\n  containers: [{{name: c, image: busybox:1.36, command: [sleep, '3600']}}]\n"
    ))
}

pub(crate) fn node(name: &str) -> Object {
    obj(&format!(
        "apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\nstatus: {{capacity: {{cpu: '2', memory: 4Gi, pods: '110'}}, conditions: [{{type: Ready, status: 'True'}}]}}\n"
    ))
}

pub(crate) fn namespace(name: &str) -> Object {
    obj(&format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}\n"))
}

pub(crate) fn deployment(name: &str, replicas: i32, image: &str) -> Object {
    obj(&format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  replicas: {replicas}\n  \
         selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    \
         spec:\n      containers: [{{name: c, image: '{image}'}}]\n"
    ))
}

/// A test harness: a state, a clock, and a log index that moves by one per entry.
pub(crate) struct Harness {
    pub(crate) state: State,
    pub(crate) now_ms: i64,
    pub(crate) serial: u64,
    pub(crate) events: Vec<orch_core::WatchEvent>,
}

impl Harness {
    /// A state after its first entry (which creates the `default` namespace).
    pub(crate) fn new() -> Self {
        let mut h = Self { state: State::new(), now_ms: 1_800_000_000_000, serial: 0, events: Vec::new() };
        h.run_requests(vec![]);
        h
    }

    pub(crate) fn index(&self) -> u64 {
        self.state.applied_index()
    }

    /// Applies one entry of one command; returns its outcome.
    pub(crate) fn run(&mut self, command: Command) -> Outcome {
        self.serial += 1;
        let request = Request { client: ClientId(1), serial: self.serial, acked_below: 0, retry: false, command };
        self.run_requests(vec![request]).remove(0)
    }

    pub(crate) fn run_requests(&mut self, requests: Vec<Request>) -> Vec<Outcome> {
        self.now_ms += 1000;
        let index = self.state.applied_index() + 1;
        let out = self.state.apply(index, Entry::new(self.now_ms, requests));
        self.state.check_invariants().unwrap_or_else(|e| panic!("invariant broken at {index}: {e}"));
        self.events.extend(out.events);
        out.outcomes
    }

    /// Runs a command that must succeed.
    pub(crate) fn ok(&mut self, command: Command) -> orch_core::Success {
        match self.run(command) {
            Ok(s) => s,
            Err(e) => panic!("command failed: {e}"),
        }
    }

    /// Runs a command that must fail, returning the error message; checks that no object
    /// changed and no event was emitted.
    pub(crate) fn err(&mut self, command: Command) -> String {
        let before: Vec<Vec<Object>> = self.objects_by_kind();
        let events = self.events.len();
        match self.run(command) {
            Ok(s) => panic!("command succeeded: {s:?}"),
            Err(e) => {
                assert_eq!(self.events.len(), events, "a rejected command emitted events");
                assert_eq!(self.objects_by_kind(), before, "a rejected command changed objects");
                e.to_string()
            }
        }
    }

    fn objects_by_kind(&self) -> Vec<Vec<Object>> {
        orch_core::Kind::ALL.iter().map(|k| self.state.list(*k, None).cloned().collect()).collect()
    }
}
