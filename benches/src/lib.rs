//! Benchmarks for orch. `benches/` holds the criterion benches (`cargo bench -p orch-benches`)
//! and measurement binaries; results are recorded in `BENCHMARKS.md` at the repository root.
//! This library holds the fixtures they share.
