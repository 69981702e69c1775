use anyhow::Result;
use boveda_service::{JobDone, JobSpec, Observers, Operation, ServiceError, run_job};
use boveda_service::{NewVault, Registry, VaultUpdate, create_vault, summarize, update_vault};
use boveda_vault::{CheckOptions, KdfParams, check};

use super::Ctx;
use crate::Outcome;
use crate::args::{KeyCmd, ReplicationCmd, VaultCmd};
use crate::output::{print_table, size, time};
use crate::passphrase::{new_passphrase, passphrase};

fn kdf(fast: bool) -> KdfParams {
    if fast { KdfParams::TESTING } else { KdfParams::DEFAULT }
}

pub fn run(ctx: &Ctx, cmd: VaultCmd) -> Result<Outcome> {
    match cmd {
        VaultCmd::Create(a) => {
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
            };
            let vault = create_vault(&req, &pass)?;
            if ctx.json() {
                ctx.print_json(&summarize(&vault)?)?;
            } else {
                println!("created vault {} ({}) at {}", req.name, vault.config().id.short(), vault.location());
            }
        }
        VaultCmd::List => {
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
        }
        VaultCmd::Show => {
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
                    vec!["soft delete".into(), format!("{} days", s.soft_delete_days)],
                    vec!["alerts webhook".into(), s.webhook.clone().unwrap_or_else(|| "-".into())],
                    vec![
                        "store retries".into(),
                        format!("{} tries, at most {}s apart", s.store_retries, s.store_retry_max_wait_secs),
                    ],
                    vec!["parallel requests".into(), s.parallel_requests.to_string()],
                ];
                print_table(&["SETTING", "VALUE"], &rows);
            }
        }
        VaultCmd::Update {
            webhook,
            no_webhook,
            soft_delete_days,
            store_retries,
            store_retry_max_wait,
            parallel_requests,
        } => {
            let mut vault = ctx.open()?;
            let max_wait = match store_retry_max_wait {
                Some(text) => {
                    let d = super::jobs::parse_duration(&text)
                        .map_err(|e| anyhow::anyhow!("--store-retry-max-wait: {e}"))?;
                    Some(u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
                }
                None => None,
            };
            let update = VaultUpdate {
                webhook: if no_webhook { Some(None) } else { webhook.map(Some) },
                soft_delete_days,
                store_retries,
                store_retry_max_wait_secs: max_wait,
                parallel_requests,
            };
            update_vault(&mut vault, &update)?;
            let s = summarize(&vault)?;
            if ctx.json() {
                ctx.print_json(&s)?;
            } else {
                println!(
                    "vault {}: alerts webhook {}; deleted backup data kept {} days; store calls tried {} times, waiting at most {}s; {} requests at once",
                    s.name,
                    s.webhook.as_deref().unwrap_or("none"),
                    s.soft_delete_days,
                    s.store_retries,
                    s.store_retry_max_wait_secs,
                    s.parallel_requests
                );
            }
        }
        VaultCmd::Check { read_data, secondary } => {
            let vault = ctx.open_copy(secondary)?;
            let quiet = ctx.json();
            let clock = ctx.clock()?;
            let env = ctx.job_env(clock.as_ref());
            let spec = JobSpec {
                operation: Operation::Verify,
                item: None,
                scheduled_for: None,
                heartbeat: env.heartbeat,
                hostname: env.hostname.clone(),
            };
            let mut saved = None;
            let (_job, result) = run_job(&vault, clock.as_ref(), &spec, Observers::default(), |jctx| {
                let report = check(&vault, CheckOptions { read_data }, &|step| {
                    jctx.set_phase(step);
                    if !quiet {
                        eprintln!("checking {step}");
                    }
                })?;
                let problems = report.problems.len();
                let first = report.problems.first().map(|p| format!("{} {}", p.object, p.problem));
                saved = Some(report);
                match first {
                    None => Ok(((), JobDone { details: vec!["no problems found".into()], ..JobDone::default() })),
                    Some(first) => Err(ServiceError::Invalid(format!("{problems} problem(s) found, first: {first}"))),
                }
            })?;
            let Some(report) = saved else {
                return Err(result.err().map_or_else(|| anyhow::anyhow!("check did not run"), Into::into));
            };
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
        }
        VaultCmd::Key(k) => return key(ctx, k),
        VaultCmd::Replication(r) => return replication(ctx, r),
    }
    Ok(Outcome::Ok)
}

fn key(ctx: &Ctx, cmd: KeyCmd) -> Result<Outcome> {
    let vault = ctx.open()?;
    match cmd {
        KeyCmd::Add { new_password_file, label, insecure_fast_kdf } => {
            let pass = new_passphrase(new_password_file.as_deref())?;
            if pass.is_empty() {
                anyhow::bail!("the new passphrase must not be empty");
            }
            let id = vault.add_key(&pass, &label, kdf(insecure_fast_kdf), &boveda_service::hostname())?;
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
            let removed = vault.remove_key(&id)?;
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
                let oldest = s.oldest_behind.map_or_else(|| "-".to_string(), time);
                print_table(
                    &["SECONDARY", "OBJECTS BEHIND", "BYTES BEHIND", "OLDEST", "TO DELETE"],
                    &[vec![
                        s.secondary.clone(),
                        s.objects_behind.to_string(),
                        size(s.bytes_behind),
                        oldest,
                        s.to_delete.to_string(),
                    ]],
                );
            }
        }
        ReplicationCmd::Run => {
            let report = boveda_service::replicate(&vault, &|_| {})?;
            if ctx.json() {
                ctx.print_json(&serde_json::json!({
                    "copied": report.copied, "copied_bytes": report.copied_bytes, "deleted": report.deleted
                }))?;
            } else {
                println!(
                    "copied {} object(s), {}, to the secondary; deleted {} there",
                    report.copied,
                    size(report.copied_bytes),
                    report.deleted
                );
            }
        }
    }
    Ok(Outcome::Ok)
}

/// After a command that wrote to a geo-redundant vault: a replication pass.
/// A failure is only lag (the next pass continues), so it is a warning.
pub(super) fn replicate_after(ctx: &Ctx, vault: &boveda_vault::Vault) {
    if let Err(e) = boveda_service::replicate_if_geo_redundant(vault)
        && !ctx.json()
    {
        eprintln!("warning: replication to the secondary store stopped ({e}); the next command continues it");
    }
}
