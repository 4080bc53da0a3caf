//! Cross-crate integration tests for orch live in `tests/it/` (one test binary, as the
//! house style asks, to keep link times down). Tests that need only orch-core live in
//! orch-core's own `tests/`.
