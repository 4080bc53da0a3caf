//! Prints the history of one seed around a log index: `cargo run -p orch-sim --example
//! debug_seed -- SEED INDEX`.
#![allow(clippy::print_stdout)]

fn main() {
    // RUST_LOG=openraft=debug prints openraft's own log of the run.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    }
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>().expect("a number"));
    let seed = args.next().expect("SEED");
    let index = args.next().unwrap_or(0);
    let mut config = orch_sim::Config::quick(seed);
    if let Some(ms) = std::env::var("DURATION_MS").ok().and_then(|v| v.parse().ok()) {
        config.duration = std::time::Duration::from_millis(ms);
    }
    let report = orch_sim::Simulation::new(config).run();
    print!("{report}");
    for (at, what) in &report.history.faults {
        println!("{at:>6} ms  {what}");
    }
    for a in report.history.applications.iter().filter(|a| a.index + 3 >= index && a.index <= index + 3) {
        println!("node {} index {} {:02x}{:02x} requests {:x?}", a.node, a.index, a.digest[0], a.digest[1], a.requests);
    }
    let from = std::env::var("FROM_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(u64::MAX);
    for s in report.history.samples.iter().filter(|s| s.at_ms >= from && s.at_ms <= from + 600) {
        println!(
            "{:>6} ms node {} start {} term {} leader {} commit {} applied {}",
            s.at_ms, s.node, s.incarnation, s.term, s.leader, s.commit, s.applied.0
        );
    }
}
