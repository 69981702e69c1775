//! One function per command; each opens what it needs and prints.

mod item;
mod point;
mod policy;
mod vault;

use anyhow::Result;
use boveda_service::open_vault;
use boveda_vault::Vault;
use serde::Serialize;

use crate::Outcome;
use crate::args::{Cli, Command, Output};
use crate::passphrase::passphrase;

/// What every command gets: the global flags.
pub struct Ctx {
    pub vault: Option<String>,
    pub password_file: Option<std::path::PathBuf>,
    pub output: Output,
}

impl Ctx {
    pub fn open(&self) -> Result<Vault> {
        let pass = passphrase(self.password_file.as_deref(), false)?;
        Ok(open_vault(self.vault.as_deref(), &pass)?)
    }

    pub fn json(&self) -> bool {
        self.output == Output::Json
    }

    pub fn print_json<T: Serialize>(&self, value: &T) -> Result<()> {
        println!("{}", serde_json::to_string_pretty(value)?);
        Ok(())
    }
}

pub fn run(cli: Cli) -> Result<Outcome> {
    let ctx = Ctx { vault: cli.vault, password_file: cli.password_file, output: cli.output };
    match cli.command {
        Command::Vault(cmd) => vault::run(&ctx, cmd),
        Command::Item(cmd) => item::run(&ctx, cmd),
        Command::Policy(cmd) => policy::run(&ctx, cmd),
        Command::Protection(cmd) => point::protection(&ctx, cmd),
        Command::Recoverypoint(cmd) => point::points(&ctx, cmd),
        Command::Restore(args) => point::restore(&ctx, args),
        Command::Mount { item, point, dir } => point::mount(&ctx, &item, point.as_deref(), &dir),
    }
}
