//! `boveda`: the command line. A thin layer over `boveda-service`: parse,
//! call, print. Exit codes: 0 success, 1 failure, 3 completed with warnings.

mod args;
mod args_email;
mod args_guard;
mod args_points;
mod args_policy;
mod args_verify;
mod commands;
mod output;
mod passphrase;

use std::process::ExitCode;

use boveda_service::{Remedy, ServiceError};

use clap::Parser;

/// What a command achieved, for the exit code.
pub enum Outcome {
    Ok,
    Warnings,
    Failed,
}

/// Tunes glibc's allocator for the backup pipeline, which passes
/// megabyte-sized buffers between threads:
/// - two arenas instead of eight per core, which only fragment;
/// - a fixed mmap threshold of 8 MiB. By default glibc raises the threshold
///   to the largest block freed, so after the first 16 MiB pack buffer every
///   chunk buffer came from the heap and freed memory stayed resident: peak
///   RSS of the corpus backup was 137-150 MB with a live heap of about 72 MB.
///   With the threshold fixed, pack buffers are mapped and unmapped, chunk
///   buffers are reused from the heap, and the peak is 72-79 MB.
/// - freed heap memory up to 64 MiB is kept rather than returned at once:
///   a restore frees and allocates megabytes of chunk buffers per pack, and
///   returning and refaulting them cost about 0.3 s of system time on the
///   corpus restore (1.5 s left).
fn tune_allocator() {
    const M_MMAP_THRESHOLD: i32 = -3;
    const M_ARENA_MAX: i32 = -8;
    const M_TRIM_THRESHOLD: i32 = -1;
    unsafe extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
    }
    // SAFETY: mallopt only adjusts allocator tuning; called before any thread starts.
    unsafe {
        mallopt(M_ARENA_MAX, 2);
        mallopt(M_MMAP_THRESHOLD, 8 << 20);
        mallopt(M_TRIM_THRESHOLD, 64 << 20);
    }
}

/// The error and its causes on one line, as `{:#}` shows them, but ending
/// at a store error: it already says in one line what the store answered,
/// and the protocol library's full text below it is for debugging.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = match cause.downcast_ref::<ServiceError>() {
            Some(e) => cli_text(e),
            None => cause.to_string(),
        };
        if !line.ends_with(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
        if cause.downcast_ref::<boveda_service::StoreError>().is_some() {
            break;
        }
    }
    line
}

/// A service error as the command line says it: a request field as the
/// flag that sets it, a remedy as the command to run.
fn cli_text(e: &ServiceError) -> String {
    match e {
        ServiceError::Field { field, message } => format!("{}: {message}", flag(field)),
        ServiceError::Refused { message, remedy, .. } => format!("{message}: {}", command(remedy)),
        other => other.to_string(),
    }
}

/// The flag that sets a request field.
fn flag(field: &str) -> &str {
    match field {
        "schedule.times" => "--time",
        "schedule.time_zone" => "--time-zone",
        "schedule.days" => "--day",
        "retention.daily_days" => "--daily-keep",
        "retention.weekly.weeks" => "--weekly-keep",
        "retention.weekly.days" => "--weekly-on",
        "retention.monthly.months" => "--monthly-keep",
        "retention.monthly.on" => "--monthly-on",
        "retention.yearly.years" => "--yearly-keep",
        "retention.yearly.month" => "--yearly-month",
        "retention.yearly.on" => "--yearly-on",
        "retention" => "retention (--daily-keep, --weekly-keep, --monthly-keep or --yearly-keep)",
        "drop_rules" => "--drop-rule",
        "paths" => "--path",
        "passphrase" => "the new passphrase",
        "secondary" => "--secondary",
        "redundancy" => "--redundancy",
        "role" => "--role",
        "items" => "--item",
        "expires" => "--expires",
        "retain_until" => "--retain-until",
        "safety_margin" => "--safety-margin",
        "store_retry_max_wait_secs" => "--store-retry-max-wait",
        "replication_lag_alert_mins" => "--replication-lag-alert",
        "soft_delete_days" => "--soft-delete-days",
        "immutability" => "--immutability",
        "confirm" => "--confirm",
        "store_retries" => "--store-retries",
        "parallel_requests" => "--parallel-requests",
        "webhook" => "--webhook",
        "import_job" => "--import-job",
        other => other,
    }
}

/// A remedy as the command that carries it out.
fn command(remedy: &Remedy) -> String {
    match remedy {
        Remedy::ListItems => "see `boveda item list`".into(),
        Remedy::ListJobs => "see `boveda job list`".into(),
        Remedy::ListAlerts => "see `boveda alert list`".into(),
        Remedy::ListPolicies => "see `boveda policy list`".into(),
        Remedy::ListTokens => "see `boveda token list`".into(),
        Remedy::AskGuard { request } => format!("give the guard the code of `boveda guard show {request}`"),
        Remedy::ResumeProtection { item, policy } => {
            format!("`boveda protection resume {item} --policy {}` first", policy.as_deref().unwrap_or("NAME"))
        }
        Remedy::Undelete { item } => format!("`boveda protection undelete {item}` first"),
        Remedy::CheckVault => "`boveda vault check` names what it affects".into(),
        Remedy::CreateVault => "create one with `boveda vault create`, or pass --vault NAME|PATH".into(),
        Remedy::ChooseVault => "choose one with --vault NAME or BOVEDA_VAULT".into(),
        Remedy::RegisterHost => {
            "ask the vault's admin for new credentials (`boveda host credentials`) and register again".into()
        }
        Remedy::AskAdmin => "only the vault's admin can change that (docs/FLEET.md)".into(),
        Remedy::ReachServer { server } => {
            format!("check that `boveda serve` runs at {server} and that this host reaches it")
        }
    }
}

/// Printing to a closed standard output panics in `println!`: that one
/// panic ends the process quietly with status 141 (128 + SIGPIPE).
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if text.starts_with("failed printing to stdout") && text.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    tune_allocator();
    // SIGPIPE stays ignored (Rust's default): a store connection reset
    // mid-upload must be an error the retry layer sees, not a silent death
    // of the process (the agent's included). A standard output closed by
    // its reader (`boveda ... | head`) ends the process quietly instead,
    // with the status a SIGPIPE would have given.
    quiet_on_closed_stdout();
    let cli = args::Cli::parse();
    let result = commands::run(cli);
    if std::env::var_os("BOVEDA_STORE_METRICS").is_some_and(|v| !v.is_empty() && v != "0") {
        eprintln!("boveda: store: {}", boveda_service::store_requests());
    }
    match result {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Warnings) => ExitCode::from(3),
        Ok(Outcome::Failed) => ExitCode::from(1),
        Err(e) => {
            eprintln!("boveda: error: {}", one_line(&e));
            ExitCode::from(1)
        }
    }
}
