//! One function per command; each opens what it needs and prints.

mod agent;
mod alerts;
mod email;
mod guard;
mod host;
mod item;
mod jobs;
mod offline;
mod points;
mod policy;
mod protection;
mod prune;
mod restore;
mod serve;
mod signals;
mod usage;
mod vault;
mod verify;

use anyhow::Result;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use boveda_service::{Clock, DEFAULT_HEARTBEAT, JobEnv, clock_from_env, hostname, open_vault};
use boveda_service::{DamageLog, Vault};
use serde::Serialize;

use crate::Outcome;
use crate::args::{Cli, Command, Output};
use crate::passphrase::passphrase;

/// What every command gets: the global flags.
pub struct Ctx {
    pub vault: Option<String>,
    pub password_file: Option<std::path::PathBuf>,
    pub output: Output,
    /// The damage logs of the vaults this command opened.
    opened: Mutex<Vec<Arc<DamageLog>>>,
}

impl Ctx {
    pub fn open(&self) -> Result<OpenVault> {
        self.open_copy(false)
    }

    /// The vault, or with `secondary` its copy in a geo-redundant vault's
    /// secondary store.
    pub fn open_copy(&self, secondary: bool) -> Result<OpenVault> {
        let pass = passphrase(self.password_file.as_deref(), false)?;
        let vault = if secondary {
            boveda_service::open_secondary_vault(self.vault.as_deref(), &pass)?
        } else {
            open_vault(self.vault.as_deref(), &pass)?
        };
        if let Ok(mut opened) = self.opened.lock() {
            opened.push(vault.damage().clone());
        }
        Ok(OpenVault { vault: Some(vault), clock: self.clock()?, json: self.json() })
    }

    /// Damaged objects the command's reads skipped, by name.
    fn skipped_damage(&self) -> Vec<(String, String)> {
        let opened = self.opened.lock().map(|o| o.clone()).unwrap_or_default();
        let mut all: Vec<_> = opened.iter().flat_map(|log| log.entries()).collect();
        all.sort();
        all.dedup();
        all
    }

    /// The clock: the system's, or BOVEDA_FAKE_NOW's (tests).
    pub fn clock(&self) -> Result<Arc<dyn Clock>> {
        Ok(clock_from_env()?)
    }

    /// How often jobs write their progress (BOVEDA_JOB_HEARTBEAT_MS, for
    /// tests, else 10 s).
    pub fn heartbeat(&self) -> Duration {
        std::env::var("BOVEDA_JOB_HEARTBEAT_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(DEFAULT_HEARTBEAT, Duration::from_millis)
    }

    pub fn job_env<'c>(&self, clock: &'c dyn Clock) -> JobEnv<'c> {
        JobEnv::new(clock, self.heartbeat(), hostname()).by(self.by())
    }

    /// Who runs this command, as a request for the guard's approval
    /// records it: `user <name> on <host>`.
    pub fn by(&self) -> String {
        let user = std::env::var("USER").unwrap_or_else(|_| "unknown".to_string());
        format!("user {user} on {}", hostname())
    }

    pub fn json(&self) -> bool {
        self.output == Output::Json
    }

    pub fn print_json<T: Serialize>(&self, value: &T) -> Result<()> {
        println!("{}", serde_json::to_string_pretty(value)?);
        Ok(())
    }
}

/// A vault a command opened. When the command is done with it, a
/// geo-redundant vault gets the replication pass that is due (this command
/// wrote, or another process left one due); a failed pass is lag, so it is
/// a warning.
pub struct OpenVault {
    vault: Option<Vault>,
    clock: Arc<dyn Clock>,
    json: bool,
}

impl OpenVault {
    /// The vault without the pass at the end (a long-running command that
    /// replicates on its own).
    pub fn into_inner(mut self) -> Vault {
        match self.vault.take() {
            Some(v) => v,
            None => unreachable!("an OpenVault holds its vault until dropped"),
        }
    }
}

impl std::ops::Deref for OpenVault {
    type Target = Vault;
    fn deref(&self) -> &Vault {
        match &self.vault {
            Some(v) => v,
            None => unreachable!("an OpenVault holds its vault until dropped"),
        }
    }
}

impl std::ops::DerefMut for OpenVault {
    fn deref_mut(&mut self) -> &mut Vault {
        match &mut self.vault {
            Some(v) => v,
            None => unreachable!("an OpenVault holds its vault until dropped"),
        }
    }
}

impl Drop for OpenVault {
    fn drop(&mut self) {
        let Some(vault) = &self.vault else { return };
        match boveda_service::finish_replication(vault, &*self.clock) {
            Ok(Some(outcome)) if !self.json => {
                if let Err(e) = &outcome.report {
                    eprintln!(
                        "warning: replication to the secondary store stopped ({e}); the next command continues it"
                    );
                }
                if let Some(alert) = &outcome.alert {
                    eprintln!("alert: {alert}");
                }
            }
            Ok(_) => {}
            Err(e) => {
                if !self.json {
                    eprintln!("warning: the replication status could not be recorded: {e}");
                }
            }
        }
    }
}

/// Runs a command. Damaged objects its reads skipped are named after it,
/// one line each, and turn a success into "completed with warnings".
pub fn run(cli: Cli) -> Result<Outcome> {
    let ctx = Ctx { vault: cli.vault, password_file: cli.password_file, output: cli.output, opened: Mutex::default() };
    let result = dispatch(&ctx, cli.command);
    let damage = ctx.skipped_damage();
    for (object, why) in &damage {
        eprintln!("warning: skipped damaged object {object} ({why}); `boveda vault check` names what it affects");
    }
    match result {
        Ok(Outcome::Ok) if !damage.is_empty() => Ok(Outcome::Warnings),
        other => other,
    }
}

fn dispatch(ctx: &Ctx, command: Command) -> Result<Outcome> {
    match command {
        Command::Vault(cmd) => vault::run(ctx, cmd),
        Command::Item(cmd) => item::run(ctx, cmd),
        Command::Policy(cmd) => policy::run(ctx, cmd),
        Command::Protection(cmd) => protection::protection(ctx, cmd),
        Command::Recoverypoint(cmd) => points::points(ctx, cmd),
        Command::Restore(args) => restore::restore(ctx, args),
        Command::Job(cmd) => jobs::job(ctx, cmd),
        Command::Alert(cmd) => alerts::alert(ctx, cmd),
        Command::Offline(cmd) => offline::run(ctx, cmd),
        Command::Prune { dry_run, safety_margin } => prune::prune(ctx, dry_run, &safety_margin),
        Command::Usage { prices } => usage::usage(ctx, prices.as_deref()),
        Command::Report { days, csv } => usage::report(ctx, days, csv),
        Command::Center { vaults } => usage::center(ctx, &vaults),
        Command::Agent(args) => agent::agent(ctx, args),
        Command::Serve(args) => serve::serve(ctx, args),
        Command::Token(cmd) => serve::token(ctx, cmd),
        Command::Guard(cmd) => guard::run(ctx, cmd),
        Command::Host(cmd) => host::run(ctx, cmd),
        Command::Mount { item, point, dir } => points::mount(ctx, &item, point.as_deref(), &dir),
    }
}
