//! `boveda host`: credentials, registering, listing and unregistering
//! hosts (an admin's, with the vault open), and a registered host's own
//! commands (with its identity alone: no passphrase, no store).

use std::sync::Arc;

use anyhow::{Context, Result};
use boveda_service::fleet::client::HostClient;
use boveda_service::fleet::identity::{HostIdentity, identity_dir};
use boveda_service::fleet::work::Assignment;
use boveda_service::fleet::{self, HostCredentials, Registration};
use boveda_service::{ServiceErrorKind, hostname};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Ctx;
use super::prune::parse_duration;
use super::signals::stop_on_signals;
use crate::Outcome;
use crate::args::HostCmd;
use crate::output::{BackupBar, backup_summary, opt_time, print_table, time};

pub fn run(ctx: &Ctx, cmd: HostCmd) -> Result<Outcome> {
    match cmd {
        HostCmd::Credentials { server, tls_cert, expires } => credentials(ctx, &server, &tls_cert, &expires),
        HostCmd::Register { credentials, name } => register(ctx, &credentials, name),
        HostCmd::List => list(ctx),
        HostCmd::Unregister { name } => {
            let vault = ctx.open()?;
            let host = fleet::unregister_host(&vault, &name, ctx.clock()?.now())?;
            if ctx.json() {
                ctx.print_json(&host)?;
            } else {
                println!(
                    "unregistered host {}: its token is refused from now on, its items' protection is stopped (their points are kept)",
                    host.name
                );
            }
            Ok(Outcome::Ok)
        }
        HostCmd::Items => items(ctx),
        HostCmd::Backup { item, retain_until } => backup(ctx, &item, retain_until.as_deref()),
        HostCmd::Agent { restore_roots } => agent(&restore_roots),
    }
}

/// How long the agent waits at most between tries to reach its server.
const MOST_BACKOFF: Duration = Duration::from_secs(60);

/// `boveda host agent`: runs the backups the server asks for (scheduled
/// slots, backup now), one at a time, until SIGTERM or SIGINT; an
/// unreachable server is tried again with a growing wait.
fn agent(restore_roots: &[std::path::PathBuf]) -> Result<Outcome> {
    let (dir, identity, client) = client()?;
    let stop = stop_on_signals();
    eprintln!("boveda host agent: host {} of vault {} at {}", identity.name, identity.vault, identity.server);
    let mut backoff = Duration::from_secs(1);
    while !stop.load(Ordering::Relaxed) {
        let work = match client.work(Duration::from_secs(20)) {
            Ok(work) => {
                backoff = Duration::from_secs(1);
                work
            }
            Err(e) if e.kind() == ServiceErrorKind::PermissionDenied => {
                return Err(e).context("the server refuses this host");
            }
            Err(e) => {
                eprintln!("boveda host agent: {e}; trying again in {} s", backoff.as_secs());
                let until = Instant::now() + backoff;
                while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(200));
                }
                backoff = (backoff * 2).min(MOST_BACKOFF);
                continue;
            }
        };
        for w in work {
            if let (Some(order), Some(request)) = (&w.discover, &w.request) {
                let found = fleet::discover::discover_here(&identity.name, order);
                if let Err(e) = client.found(request, &found) {
                    eprintln!("boveda host agent: a look at {} for the server: {e}", order.path.display());
                }
                continue;
            }
            if let Some(order) = &w.restore {
                let into = format!("restore of {} into {}", w.item, order.target.display());
                match fleet::host_restore::restore_ordered(client.clone(), &w, restore_roots) {
                    Ok(r) => eprintln!(
                        "boveda host agent: {into}: {} files, {} written, {} not written",
                        r.stats.files,
                        crate::output::size(r.stats.bytes),
                        r.errors.len()
                    ),
                    Err(e) => eprintln!("boveda host agent: {into} failed: {e}"),
                }
                continue;
            }
            let what = match w.scheduled_for {
                Some(slot) => format!("scheduled for {}", time(slot)),
                None => "backup now".to_string(),
            };
            match fleet::host_backup::backup_item(&dir, &identity, client.clone(), &w, &Quiet) {
                Ok(o) => eprintln!(
                    "boveda host agent: {} ({what}): point {} (job {}), {} files, {} new",
                    o.item,
                    &o.point[..o.point.len().min(8)],
                    o.job.short(),
                    o.stats.files,
                    crate::output::size(o.stats.bytes_stored)
                ),
                Err(e) => eprintln!("boveda host agent: {} ({what}) failed: {e}", w.item),
            }
        }
    }
    Ok(Outcome::Ok)
}

struct Quiet;

impl boveda_service::BackupProgress for Quiet {}

fn credentials(ctx: &Ctx, server: &str, cert: &std::path::Path, expires: &str) -> Result<Outcome> {
    let vault = ctx.open()?;
    let fingerprint = boveda_server::certificate_fingerprint_of(cert)?;
    let life = parse_duration(expires)?;
    let creds = fleet::create_credentials(&vault, server, &fingerprint, life, ctx.clock()?.now())?;
    println!("{}", serde_json::to_string_pretty(&creds)?);
    eprintln!(
        "credentials for one host of vault {}, valid until {}: copy them to the host and run `boveda host register --credentials FILE` there",
        creds.vault,
        time(creds.expires)
    );
    Ok(Outcome::Ok)
}

fn register(ctx: &Ctx, file: &std::path::Path, name: Option<String>) -> Result<Outcome> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let creds = HostCredentials::parse(&text)?;
    let dir = identity_dir();
    let name = name.unwrap_or_else(hostname);
    let client = HostClient::new(&creds.server, &creds.fingerprint, &creds.vault)?;
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string())))
        .unwrap_or_else(|| std::env::consts::OS.to_string());
    let reg = Registration {
        credentials: creds.id,
        secret: creds.secret.clone(),
        name,
        os,
        version: env!("CARGO_PKG_VERSION").into(),
    };
    // refuse at once on a machine registered already, before the
    // credentials are spent
    if HostIdentity::load(&dir).is_ok() {
        anyhow::bail!(
            "this machine is registered already ({}): unregister it on the server and remove that folder first",
            dir.display()
        );
    }
    let registered = client.register(&reg)?;
    let identity = HostIdentity::new(&creds, &registered, creds.fingerprint.clone());
    let path = identity.save(&dir)?;
    if ctx.json() {
        ctx.print_json(&registered.host)?;
    } else {
        println!(
            "registered host {} with vault {} at {}; its identity is in {}",
            registered.host.name,
            creds.vault,
            creds.server,
            path.display()
        );
    }
    Ok(Outcome::Ok)
}

fn list(ctx: &Ctx) -> Result<Outcome> {
    let vault = ctx.open()?;
    let hosts = fleet::host_overview(&vault, ctx.clock()?.now())?;
    if ctx.json() {
        ctx.print_json(&hosts)?;
        return Ok(Outcome::Ok);
    }
    let rows: Vec<Vec<String>> = hosts
        .iter()
        .map(|o| {
            let h = &o.host;
            vec![
                h.name.clone(),
                o.state.clone(),
                h.os.clone(),
                h.version.clone(),
                time(h.registered),
                opt_time(h.last_contact),
                o.items.len().to_string(),
            ]
        })
        .collect();
    print_table(&["NAME", "STATE", "OS", "VERSION", "REGISTERED", "LAST CONTACT", "ITEMS"], &rows);
    Ok(Outcome::Ok)
}

fn client() -> Result<(std::path::PathBuf, HostIdentity, Arc<HostClient>)> {
    let dir = identity_dir();
    let identity = HostIdentity::load(&dir)?;
    let client = HostClient::new(&identity.server, &identity.fingerprint, &identity.vault)?.with_token(&identity.token);
    Ok((dir, identity, Arc::new(client)))
}

fn items(ctx: &Ctx) -> Result<Outcome> {
    let (_, identity, client) = client()?;
    let items = client.items()?;
    if ctx.json() {
        ctx.print_json(&items)?;
        return Ok(Outcome::Ok);
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|i| vec![i.name.clone(), i.source.type_name().into(), i.protection.state.as_str().into()])
        .collect();
    eprintln!("items of host {} in vault {}:", identity.name, identity.vault);
    print_table(&["NAME", "TYPE", "PROTECTION"], &rows);
    Ok(Outcome::Ok)
}

fn backup(ctx: &Ctx, item: &str, retain_until: Option<&str>) -> Result<Outcome> {
    let (dir, identity, client) = client()?;
    let started = std::time::Instant::now();
    let bar = BackupBar::new();
    let work =
        Assignment { item: item.to_string(), retain_until: retain_until.map(str::to_string), ..Assignment::default() };
    let result = fleet::host_backup::backup_item(&dir, &identity, client, &work, &bar);
    bar.finish();
    let outcome = result?;
    if ctx.json() {
        ctx.print_json(&outcome)?;
    } else {
        let secs = started.elapsed().as_secs_f64();
        let point = &outcome.point[..outcome.point.len().min(8)];
        let item = format!("{} (host {})", outcome.item, identity.name);
        println!("{}", backup_summary(point, &item, &outcome.stats, secs, &outcome.job.short()));
    }
    Ok(if outcome.warnings.is_empty() { Outcome::Ok } else { Outcome::Warnings })
}
