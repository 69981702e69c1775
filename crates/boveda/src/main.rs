//! `boveda`: the command line. A thin layer over `boveda-service`: parse,
//! call, print. Exit codes: 0 success, 1 failure, 3 completed with warnings.

mod args;
mod commands;
mod output;
mod passphrase;

use std::process::ExitCode;

use clap::Parser;

/// What a command achieved, for the exit code.
pub enum Outcome {
    Ok,
    Warnings,
    Failed,
}

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    match commands::run(cli) {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Warnings) => ExitCode::from(3),
        Ok(Outcome::Failed) => ExitCode::from(1),
        Err(e) => {
            eprintln!("boveda: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
