//! `boveda guard`: the guard's own commands (create, approve: its
//! passphrase alone, no vault) and the admin's (bind, unbind, requests,
//! accept), see docs/SECURITY.md.

use anyhow::{Context, Result, bail};
use boveda_service::guard::{self, ApprovalCode, GuardKey, RequestCode};

use super::Ctx;
use super::prune::parse_duration;
use crate::Outcome;
use crate::args_guard::GuardCmd;
use crate::output::{print_table, time};

pub fn run(ctx: &Ctx, cmd: GuardCmd) -> Result<Outcome> {
    match cmd {
        GuardCmd::Create => {
            let pass = guard_passphrase(true)?;
            let key = guard::create_guard(&pass)?;
            if ctx.json() {
                ctx.print_json(&serde_json::json!({ "identity": key.encode() }))?;
            } else {
                println!("{}", key.encode());
                eprintln!(
                    "this is the guard's identity: give it to the vault's admin (`boveda guard bind`); keep the passphrase to yourself, it is the guard"
                );
            }
        }
        GuardCmd::Bind { identity, name } => {
            let vault = ctx.open()?;
            let binding = guard::bind_guard(&vault, &identity, &name, &ctx.by(), ctx.clock()?.as_ref())?;
            println!(
                "vault {} is bound to guard {}: its critical operations need the guard's approval",
                vault.settings().name,
                binding.name
            );
        }
        GuardCmd::Unbind => {
            let vault = ctx.open()?;
            guard::unbind_guard(&vault, &ctx.by(), ctx.clock()?.as_ref())?;
            println!("vault {} has no guard any more", vault.settings().name);
        }
        GuardCmd::Requests => {
            let vault = ctx.open()?;
            let view = guard::guard_view(&vault, ctx.clock()?.now())?;
            if ctx.json() {
                ctx.print_json(&view)?;
                return Ok(Outcome::Ok);
            }
            match &view.guard {
                Some(g) => println!(
                    "guard: {} ({}), bound {}",
                    g.name,
                    GuardKey { id: g.id, public_key: g.public_key.clone() }.encode(),
                    time(g.bound)
                ),
                None => println!("guard: none"),
            }
            let rows: Vec<Vec<String>> = view
                .requests
                .iter()
                .map(|r| {
                    vec![
                        r.request.id.short(),
                        r.state.to_string(),
                        time(r.request.requested),
                        r.request.requested_by.clone(),
                        r.description.clone(),
                    ]
                })
                .collect();
            print_table(&["REQUEST", "STATE", "REQUESTED", "BY", "OPERATION"], &rows);
        }
        GuardCmd::Show { request } => {
            let vault = ctx.open()?;
            let view = guard::guard_view(&vault, ctx.clock()?.now())?;
            let found = vault.guard_request(&request)?;
            let r = view.requests.iter().find(|r| r.request.id == found.id).context("request not listed")?;
            if ctx.json() {
                ctx.print_json(r)?;
            } else {
                println!(
                    "request:   {}\nstate:     {}\noperation: {}\nby:        {}\nrequested: {}\ncode:      {}",
                    r.request.id.to_hex(),
                    r.state,
                    r.description,
                    r.request.requested_by,
                    time(r.request.requested),
                    r.code
                );
            }
        }
        GuardCmd::Approve { code, guard: identity, valid_for } => {
            let request = RequestCode::decode(&code)?;
            let key = GuardKey::parse(&identity)?;
            let valid = parse_duration(&valid_for).context("--valid-for")?;
            eprintln!(
                "approving, for {valid_for}, request {} of vault {}: {} (asked by {})",
                request.request.short(),
                request.vault_name,
                request.operation.describe(),
                request.requested_by
            );
            let pass = guard_passphrase(false)?;
            let approval = guard::sign_approval(&request, &key, &pass, valid, ctx.clock()?.now())?;
            println!("{}", approval.encode()?);
        }
        GuardCmd::Accept { approval } => {
            let vault = ctx.open()?;
            let code = ApprovalCode::decode(&approval)?;
            let r =
                guard::approve(&vault, &code, &format!("approval code given by {}", ctx.by()), ctx.clock()?.as_ref())?;
            println!(
                "request {} approved until {}: run the operation again ({})",
                r.id.short(),
                time(code.expires),
                r.operation.describe()
            );
        }
        GuardCmd::Reject { request } => {
            let vault = ctx.open()?;
            let r = guard::reject(&vault, &request, &ctx.by(), ctx.clock()?.as_ref())?;
            println!("request {} rejected", r.id.short());
        }
    }
    Ok(Outcome::Ok)
}

/// The guard's passphrase: BOVEDA_GUARD_PASSPHRASE, or a prompt.
fn guard_passphrase(confirm: bool) -> Result<String> {
    if let Ok(p) = std::env::var("BOVEDA_GUARD_PASSPHRASE") {
        return Ok(p);
    }
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        bail!("no guard passphrase given: set BOVEDA_GUARD_PASSPHRASE or run in a terminal");
    }
    let first = rpassword::prompt_password("Guard passphrase: ").context("cannot read the passphrase")?;
    if confirm && rpassword::prompt_password("Repeat it: ").context("cannot read the passphrase")? != first {
        bail!("the passphrases differ");
    }
    Ok(first)
}
