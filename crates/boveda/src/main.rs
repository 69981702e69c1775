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

/// glibc gives each thread its own malloc arena by default (8 per core);
/// the pipeline's threads pass buffers between each other, so many arenas
/// only fragment memory. Two keep peak RSS low with no contention measured.
fn limit_malloc_arenas() {
    const M_ARENA_MAX: i32 = -8;
    unsafe extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
    }
    // SAFETY: mallopt only adjusts allocator tuning; called before any thread starts.
    unsafe {
        mallopt(M_ARENA_MAX, 2);
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
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
