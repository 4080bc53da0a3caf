//! orchd and orchctl as real processes on loopback, with temporary data directories.

mod agent;
mod cluster;
mod harness;
mod loops;
mod rollout;
mod single;
