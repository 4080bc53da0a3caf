//! `orchctl`: the command line of an orch cluster, modelled on kubectl.

use std::process::ExitCode;

use clap::Parser;
use orchctl::{Cli, run};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr();
    match run(cli, &mut out, &mut err).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(orchctl::CtlError::Exit(code)) => {
            // As kubectl: the command's own exit code.
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
