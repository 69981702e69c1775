use anyhow::{Context, Result};
use boveda_service::KdfParams;
use boveda_service::{NewVault, Registry, VaultUpdate, create_vault, summarize, update_vault};

use super::Ctx;
use crate::Outcome;
use crate::args::{CreateArgs, KeyCmd, ReplicationCmd, UpdateArgs, VaultCmd};
use crate::output::{print_table, size, time};
use crate::passphrase::{new_passphrase, passphrase};

fn kdf(fast: bool) -> KdfParams {
    if fast { KdfParams::TESTING } else { KdfParams::DEFAULT }
}

pub fn run(ctx: &Ctx, cmd: VaultCmd) -> Result<Outcome> {
    match cmd {
        VaultCmd::Create(a) => create(ctx, a),
        VaultCmd::List => list(ctx),
        VaultCmd::Show => show(ctx),
        VaultCmd::Update(args) => update(ctx, args),
        VaultCmd::Check { read_data, secondary } => check(ctx, read_data, secondary),
        VaultCmd::Repair { read_data } => repair(ctx, read_data),
        VaultCmd::Key(k) => key(ctx, k),
        VaultCmd::Replication(r) => replication(ctx, r),
        VaultCmd::Email(cmd) => super::email::email(ctx, cmd),
    }
}

/// `vault create`
fn create(ctx: &Ctx, a: CreateArgs) -> Result<Outcome> {
    let pass = passphrase(ctx.password_file.as_deref(), true)?;
    let req = NewVault {
        name: a.name,
        store: a.store,
        location: a.location,
        redundancy: a.redundancy,
        secondary: a.secondary,
        pack_size_mib: a.pack_size_mib,
        compression_level: a.compression,
        kdf: kdf(a.insecure_fast_kdf),
        create_container: a.create_container,
        object_lock: a.object_lock,
        lock_margin_days: a.lock_margin_days,
    };
    let vault = create_vault(&req, &pass)?;
    if ctx.json() {
        ctx.print_json(&summarize(&vault)?)?;
    } else {
        println!("created vault {} ({}) at {}", req.name, vault.config().id.short(), vault.location());
    }
    Ok(Outcome::Ok)
}

/// `vault list`
fn list(ctx: &Ctx) -> Result<Outcome> {
    let reg = Registry::load()?;
    if ctx.json() {
        ctx.print_json(&reg.vaults)?;
    } else {
        let rows: Vec<_> = reg
            .vaults
            .iter()
            .map(|v| vec![v.name.clone(), v.store.clone(), v.id[..8.min(v.id.len())].to_string()])
            .collect();
        print_table(&["NAME", "STORE", "ID"], &rows);
    }
    Ok(Outcome::Ok)
}

/// `vault show`
fn show(ctx: &Ctx) -> Result<Outcome> {
    let vault = ctx.open()?;
    let s = summarize(&vault)?;
    if ctx.json() {
        ctx.print_json(&s)?;
    } else {
        let rows = vec![
            vec!["name".into(), s.name.clone()],
            vec!["id".into(), s.id.clone()],
            vec!["store".into(), s.store.clone()],
            vec!["location".into(), s.location.clone()],
            vec!["redundancy".into(), s.redundancy.clone()],
            vec!["secondary".into(), s.secondary.clone().unwrap_or_else(|| "-".into())],
            vec!["format version".into(), s.format_version.to_string()],
            vec!["created".into(), s.created.clone()],
            vec!["pack size".into(), size(u64::from(s.pack_size))],
            vec!["compression".into(), format!("zstd level {}", s.compression_level)],
            vec![
                "chunk sizes".into(),
                format!(
                    "{} / {} / {}",
                    size(s.chunk_sizes.min_size.into()),
                    size(s.chunk_sizes.avg_size.into()),
                    size(s.chunk_sizes.max_size.into())
                ),
            ],
            vec!["items".into(), s.items.to_string()],
            vec!["recovery points".into(), s.recovery_points.to_string()],
            vec!["packs".into(), s.packs.to_string()],
            vec!["chunks".into(), s.chunks.to_string()],
            vec!["protected size".into(), size(s.protected_bytes)],
            vec!["stored size".into(), size(s.stored_bytes)],
            vec![
                "soft delete".into(),
                format!("{} days{}", s.soft_delete_days, if s.soft_delete_always_on { ", always-on" } else { "" }),
            ],
            vec!["immutability".into(), s.immutability.clone()],
            vec!["object lock".into(), s.object_lock.clone().unwrap_or_else(|| "none".into())],
            vec!["alerts webhook".into(), s.webhook.clone().unwrap_or_else(|| "-".into())],
            vec![
                "store retries".into(),
                format!("{} tries, at most {}s apart", s.store_retries, s.store_retry_max_wait_secs),
            ],
            vec!["parallel requests".into(), s.parallel_requests.to_string()],
            vec!["shipping address".into(), s.shipping_address.clone().unwrap_or_else(|| "-".into())],
        ];
        let mut rows = rows;
        if let Some(r) = &s.replication {
            let state = match (r.pending_since, &r.last_error) {
                (None, _) => {
                    format!("caught up (last pass {})", r.last_success.map_or_else(|| "never".to_string(), time))
                }
                (Some(since), None) => format!("behind since {}", time(since)),
                (Some(since), Some(e)) => format!("behind since {}; last pass failed: {e}", time(since)),
            };
            rows.insert(6, vec!["replication".into(), state]);
            rows.insert(
                7,
                vec![
                    "replicate during backup".into(),
                    if s.replicate_during_backup { "yes" } else { "no (after each command)" }.into(),
                ],
            );
        }
        print_table(&["SETTING", "VALUE"], &rows);
    }
    Ok(Outcome::Ok)
}

/// `vault update`
fn update(ctx: &Ctx, args: UpdateArgs) -> Result<Outcome> {
    let UpdateArgs {
        webhook,
        no_webhook,
        soft_delete_days,
        store_retries,
        store_retry_max_wait,
        parallel_requests,
        replication_lag_alert,
        redundancy,
        secondary,
        shipping_address,
        replicate_during_backup,
        immutability,
        soft_delete_always_on,
        confirm,
    } = args;
    let mut vault = ctx.open()?;
    let update = VaultUpdate {
        webhook: if no_webhook { Some(None) } else { webhook.map(Some) },
        soft_delete_days,
        store_retries,
        parallel_requests,
        shipping_address: shipping_address.map(|a| Some(a).filter(|a| !a.trim().is_empty())),
        replicate_during_backup,
        immutability,
        soft_delete_always_on: soft_delete_always_on.then_some(true),
        confirm,
        ..VaultUpdate::default()
    }
    .with_waits(store_retry_max_wait.as_deref(), replication_lag_alert.as_deref())?;
    update_vault(&vault, &update, &ctx.by(), ctx.clock()?.as_ref())?;
    if let Some(redundancy) = redundancy {
        let full_copy = boveda_service::change_redundancy(&mut vault, &redundancy, secondary.as_deref())
            .map_err(|e| anyhow::anyhow!("--redundancy: {e}"))?;
        if full_copy {
            copy_to_secondary(ctx, &vault)?;
        }
    }
    let s = summarize(&vault)?;
    if ctx.json() {
        ctx.print_json(&s)?;
    } else {
        println!(
            "vault {}: redundancy {}{}; immutability {}; alerts webhook {}; deleted backup data kept {} days{}; store calls tried {} times, waiting at most {}s; {} requests at once",
            s.name,
            s.redundancy,
            s.secondary.as_deref().map(|u| format!(" (secondary {u})")).unwrap_or_default(),
            s.immutability,
            s.webhook.as_deref().unwrap_or("none"),
            s.soft_delete_days,
            if s.soft_delete_always_on { " (always-on)" } else { "" },
            s.store_retries,
            s.store_retry_max_wait_secs,
            s.parallel_requests
        );
    }
    Ok(Outcome::Ok)
}

/// `vault check`
fn check(ctx: &Ctx, read_data: bool, secondary: bool) -> Result<Outcome> {
    let vault = ctx.open_copy(secondary)?;
    let quiet = ctx.json();
    let clock = ctx.clock()?;
    let env = ctx.job_env(clock.as_ref());
    let step = |phase: &str| {
        if !quiet {
            eprintln!("checking {phase}");
        }
    };
    let (job, result) = boveda_service::verify_job(&vault, &env, read_data, &step)?;
    let report = result?;
    for w in &job.warnings {
        eprintln!("warning: {w}");
    }
    if ctx.json() {
        ctx.print_json(&report)?;
    } else {
        for note in &report.notes {
            println!("note: {note}");
        }
        for p in &report.problems {
            println!("error: {} {}", p.object, p.problem);
            for a in &p.affects {
                println!("  affects item {} point {}: {}", a.item, a.point, a.path);
            }
            if p.more_affected > 0 {
                println!("  ... and {} more", p.more_affected);
            }
        }
        println!(
            "checked {} key slot(s), {} index object(s), {} pack(s), {} recovery point(s), {} tree(s){}",
            report.key_slots,
            report.index_objects,
            report.packs,
            report.points,
            report.trees,
            if read_data {
                format!(", read {} chunk(s), {}", report.chunks_read, size(report.bytes_read))
            } else {
                String::new()
            }
        );
        if report.is_ok() {
            println!("no problems found");
        } else {
            println!("{} problem(s) found", report.problems.len());
        }
    }
    if !report.is_ok() {
        return Ok(Outcome::Failed);
    }
    if !job.warnings.is_empty() {
        return Ok(Outcome::Warnings);
    }
    Ok(Outcome::Ok)
}

/// `vault repair`
fn repair(ctx: &Ctx, read_data: bool) -> Result<Outcome> {
    let vault = ctx.open()?;
    let quiet = ctx.json();
    let clock = ctx.clock()?;
    let env = ctx.job_env(clock.as_ref());
    let step = |phase: &str| {
        if !quiet {
            eprintln!("repair: {phase}");
        }
    };
    let (job, result) = boveda_service::repair_job(&vault, &env, read_data, &step)?;
    let report = result?;
    if ctx.json() {
        ctx.print_json(&report)?;
    } else {
        println!("repair job {}: {}", job.id.short(), job.state.as_str());
        for p in &report.check.problems {
            println!("found: {} {}", p.object, p.problem);
        }
        println!(
            "dropped from the index: {} lost pack(s), damaged chunks of {} pack(s) ({} entries)",
            report.packs_dropped, report.packs_trimmed, report.chunks_dropped
        );
        if report.unrestorable.is_empty() {
            println!("every recovery point can still be restored");
        } else {
            println!("these can no longer be restored whole (the data they used is gone):");
            for a in &report.unrestorable {
                println!("  item {} point {}: {}", a.item, a.point, a.path);
            }
            if report.more_unrestorable > 0 {
                println!("  ... and {} more", report.more_unrestorable);
            }
            println!("the next backup of each item reads those files again and stores them anew");
        }
    }
    if !report.unrestorable.is_empty() {
        return Ok(Outcome::Warnings);
    }
    Ok(Outcome::Ok)
}

fn key(ctx: &Ctx, cmd: KeyCmd) -> Result<Outcome> {
    let vault = ctx.open()?;
    match cmd {
        KeyCmd::Add { new_password_file, label, insecure_fast_kdf } => {
            let pass = new_passphrase(new_password_file.as_deref())?;
            let clock = ctx.clock()?;
            let env = ctx.job_env(clock.as_ref());
            let (job, result) = boveda_service::add_key_job(&vault, &env, &pass, &label, kdf(insecure_fast_kdf))?;
            let id = result.with_context(|| format!("key job {} {}", job.id.short(), job.state.as_str()))?;
            if ctx.json() {
                ctx.print_json(&serde_json::json!({ "id": id.to_hex() }))?;
            } else {
                println!("added key slot {}", id.short());
            }
        }
        KeyCmd::List => {
            let keys = vault.list_keys()?;
            if ctx.json() {
                ctx.print_json(&keys)?;
            } else {
                let rows: Vec<_> = keys
                    .iter()
                    .map(|k| {
                        vec![
                            if k.current { "*".into() } else { String::new() },
                            k.id.short(),
                            k.label.clone(),
                            k.hostname.clone(),
                            time(k.created),
                        ]
                    })
                    .collect();
                print_table(&["", "ID", "LABEL", "HOST", "CREATED"], &rows);
            }
        }
        KeyCmd::Remove { id } => {
            let clock = ctx.clock()?;
            let env = ctx.job_env(clock.as_ref());
            let (job, result) = boveda_service::remove_key_job(&vault, &env, &id)?;
            let removed = result.with_context(|| format!("key job {} {}", job.id.short(), job.state.as_str()))?;
            if !ctx.json() {
                println!("removed key slot {}", removed.short());
            }
        }
    }
    Ok(Outcome::Ok)
}

fn replication(ctx: &Ctx, cmd: ReplicationCmd) -> Result<Outcome> {
    let vault = ctx.open()?;
    match cmd {
        ReplicationCmd::Status => {
            let s = boveda_service::replication_status(&vault)?;
            if ctx.json() {
                ctx.print_json(&s)?;
            } else {
                let count = |n: Option<u64>| n.map_or_else(|| "?".to_string(), |n| n.to_string());
                print_table(
                    &["SECONDARY", "OBJECTS BEHIND", "BYTES BEHIND", "OLDEST", "TO DELETE"],
                    &[vec![
                        s.secondary.clone(),
                        count(s.objects_behind),
                        s.bytes_behind.map_or_else(|| "?".to_string(), size),
                        s.oldest_behind.map_or_else(|| "-".to_string(), time),
                        count(s.to_delete),
                    ]],
                );
                if let Some(e) = &s.error {
                    println!("the lag cannot be counted now: {e}");
                }
                if let Some(since) = s.pending_since {
                    println!("writes waiting for a replication pass since {}", time(since));
                }
                let last = s.last_pass.clone().unwrap_or_default();
                println!(
                    "last caught up: {}; last pass: {}{}",
                    last.last_success.map_or_else(|| "never".to_string(), time),
                    last.time.map_or_else(|| "never".to_string(), time),
                    last.error.map(|e| format!(", failed: {e}")).unwrap_or_default()
                );
                println!("an alert is raised when the lag is older than {} minute(s)", s.alert_after_mins);
            }
        }
        ReplicationCmd::Run => return copy_to_secondary(ctx, &vault),
    }
    Ok(Outcome::Ok)
}

/// A replication pass as a job, with a progress bar of the bytes to copy.
fn copy_to_secondary(ctx: &Ctx, vault: &boveda_service::Vault) -> Result<Outcome> {
    let clock = ctx.clock()?;
    let bar = crate::output::RestoreBar::new();
    let observers = boveda_service::Observers { restore: Some(&bar), ..Default::default() };
    let (job, result) = boveda_service::replication_job(vault, &*clock, observers)?;
    bar.finish();
    let report = result?;
    if ctx.json() {
        ctx.print_json(&serde_json::json!({
            "job": job.id.to_string(),
            "copied": report.copied, "copied_bytes": report.copied_bytes, "deleted": report.deleted
        }))?;
    } else {
        println!(
            "job {}: copied {} object(s), {}, to the secondary; deleted {} there",
            job.id.short(),
            report.copied,
            size(report.copied_bytes),
            report.deleted
        );
    }
    Ok(Outcome::Ok)
}
