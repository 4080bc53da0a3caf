//! `orch-sim`: run the deterministic simulation for one seed or a range of seeds.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use orch_sim::{Config, FaultMix, Simulation};

/// Runs a whole orch cluster under simulated time, network and disks, with faults drawn from
/// a seed, and checks every contract. A failing run prints the command that replays it.
#[derive(Parser, Debug)]
#[command(name = "orch-sim", version)]
struct Args {
    /// The seed of one run (default: drawn, and printed).
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// A campaign: every seed of the range `A..B` (B excluded).
    #[arg(long)]
    seeds: Option<String>,
    /// Control-plane nodes (3 or 5).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Simulated milliseconds of faults per run.
    #[arg(long, default_value_t = 20_000)]
    duration_ms: u64,
    /// The faults: all, none, or a list of loss, dup, delay, crash, partition, clock,
    /// compaction, disk, io, membership.
    #[arg(long, default_value = "all")]
    faults: String,
    /// Simulated clients (creates, updates, deletes, gets and lists).
    #[arg(long, default_value_t = Config::new(0).clients)]
    clients: u64,
    /// Simulated watchers (cut and resumed at random points).
    #[arg(long, default_value_t = Config::new(0).watchers)]
    watchers: u64,
    /// Simulated objects the clients contend on.
    #[arg(long, default_value_t = Config::new(0).keys)]
    keys: u32,
    /// Print every run's report, not only the failing ones'.
    #[arg(long)]
    verbose: bool,
}

/// The most clients, and the most watchers, of one run (their generators are forked by
/// index: clients from 100, watchers from 200).
const MAX_ACTORS: u64 = 100;
/// The most objects of one run.
const MAX_KEYS: u32 = 10_000;

fn parse_range(text: &str) -> anyhow::Result<std::ops::Range<u64>> {
    let (a, b) = text.split_once("..").ok_or_else(|| anyhow::anyhow!("--seeds: expected A..B, got {text:?}"))?;
    let (a, b): (u64, u64) = (a.trim().parse()?, b.trim().parse()?);
    anyhow::ensure!(a < b, "--seeds: the range {a}..{b} is empty");
    Ok(a..b)
}

#[allow(clippy::print_stdout)]
fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    anyhow::ensure!(matches!(args.nodes, 3 | 5), "--nodes: Unsupported value: {}: supported values: 3, 5", args.nodes);
    anyhow::ensure!(args.clients <= MAX_ACTORS, "--clients: must be at most {MAX_ACTORS}, got {}", args.clients);
    anyhow::ensure!(args.watchers <= MAX_ACTORS, "--watchers: must be at most {MAX_ACTORS}, got {}", args.watchers);
    anyhow::ensure!((1..=MAX_KEYS).contains(&args.keys), "--keys: must be in 1..={MAX_KEYS}, got {}", args.keys);
    let faults = FaultMix::parse(&args.faults).map_err(anyhow::Error::msg)?;
    let seeds = match (&args.seeds, args.seed) {
        (Some(range), _) => parse_range(range)?,
        (None, Some(seed)) => seed..seed + 1,
        (None, None) => {
            let seed = orch_raft::entropy_seed() >> 1;
            seed..seed + 1
        }
    };
    let started = Instant::now();
    let mut failed = Vec::new();
    let mut simulated = Duration::ZERO;
    let runs = seeds.end - seeds.start;
    for seed in seeds {
        println!("seed {seed}");
        let config = Config {
            nodes: args.nodes,
            duration: Duration::from_millis(args.duration_ms),
            faults: faults.clone(),
            clients: args.clients,
            watchers: args.watchers,
            keys: args.keys,
            ..Config::new(seed)
        };
        let report = Simulation::new(config).run();
        simulated += Duration::from_millis(report.stats.simulated_ms);
        if !report.violations.is_empty() {
            failed.push(seed);
            print!("{report}");
        } else if args.verbose || runs == 1 {
            print!("{report}");
        }
    }
    let wall = started.elapsed();
    println!(
        "{runs} runs, {} failed, {:.1} s wall, {:.1} simulated s per wall s, {:.1} runs per minute",
        failed.len(),
        wall.as_secs_f64(),
        simulated.as_secs_f64() / wall.as_secs_f64().max(1e-9),
        runs as f64 * 60.0 / wall.as_secs_f64().max(1e-9)
    );
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        println!("failed seeds: {failed:?}");
        Ok(ExitCode::FAILURE)
    }
}
