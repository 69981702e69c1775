//! `boveda offline`: offline seeding through shipped drives.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use boveda_service::{ImportJob, find_import_job, find_item, hostname, list_import_jobs};

use super::Ctx;
use crate::Outcome;
use crate::args::OfflineCmd;
use crate::output::{print_table, size, time};

pub fn run(ctx: &Ctx, cmd: OfflineCmd) -> Result<Outcome> {
    match cmd {
        OfflineCmd::Init { item, staging, import_job } => init(ctx, item, staging, import_job),
        OfflineCmd::Diskprep { staging, import_job, drives, capacity } => {
            diskprep(ctx, staging, import_job, drives, capacity)
        }
        OfflineCmd::Shipping { import_job, carrier, tracking } => shipping(ctx, import_job, carrier, tracking),
        OfflineCmd::Import { import_job, drives, drive_keys, force, from_staging } => {
            import(ctx, import_job, drives, drive_keys, force, from_staging)
        }
        OfflineCmd::Status { import_job } => status(ctx, import_job),
    }
}

/// `offline init`
fn init(ctx: &Ctx, item: String, staging: PathBuf, import_job: String) -> Result<Outcome> {
    let vault = ctx.open()?;
    let item = find_item(&vault, &item)?;
    let clock = ctx.clock()?;
    let (job, estimate) =
        boveda_service::init_offline(&vault, &ctx.job_env(clock.as_ref()), &item, &staging, &import_job)?;
    if ctx.json() {
        ctx.print_json(&serde_json::json!({"import_job": job, "estimate": estimate}))?;
    } else {
        println!(
            "import job {} created for item {}: its next backup is written to {}",
            job.name,
            item.name,
            job.staging_dir().display()
        );
        println!(
            "estimated seed size: up to {} (the item's source; less once compressed); {} free in the staging folder",
            size(estimate.source_bytes),
            size(estimate.staging_free)
        );
        println!("item {}: Offline seeding: initial backup pending", item.name);
    }
    Ok(Outcome::Ok)
}

/// `offline diskprep`
fn diskprep(
    ctx: &Ctx,
    staging: PathBuf,
    import_job: Option<String>,
    mut drives: Vec<PathBuf>,
    capacity: Option<String>,
) -> Result<Outcome> {
    // the store alone: diskprep needs no passphrase
    let store = boveda_service::open_vault_store(ctx.vault.as_deref())?;
    let staging = boveda_service::find_seed(&staging, import_job.as_deref())?;
    let capacity = capacity.map(|c| parse_size(&c)).transpose().context("--capacity")?;
    loop {
        let report = boveda_service::diskprep(&*store, &staging, &drives, capacity)?;
        if !ctx.json() {
            for d in report.drives.iter().filter(|d| d.key.is_some()) {
                println!(
                    "drive {} ({}): key {}  (shown once: keep it with the drive's paperwork)",
                    d.id,
                    d.path.display(),
                    d.key.as_deref().unwrap_or_default()
                );
            }
        }
        if report.remaining == 0 {
            if ctx.json() {
                ctx.print_json(&report)?;
            } else {
                println!(
                    "import job {}: {} object(s), {} copied now; every staged object is on the drives",
                    report.import_job,
                    report.copied,
                    size(report.copied_bytes)
                );
                let rows: Vec<Vec<String>> = report
                    .drives
                    .iter()
                    .filter(|d| d.objects > 0)
                    .map(|d| vec![d.id.clone(), d.path.display().to_string(), d.objects.to_string(), size(d.bytes)])
                    .collect();
                print_table(&["DRIVE", "PATH", "OBJECTS", "SIZE"], &rows);
                for d in report.drives.iter().filter(|d| d.objects == 0) {
                    println!(
                        "drive {} ({}) was not needed: nothing of the seed is on it, no need to ship it",
                        d.id,
                        d.path.display()
                    );
                }
                match &report.shipping_address {
                    Some(address) => println!("ship the drives to:\n{address}"),
                    None => println!(
                        "no shipping address is set for this vault: `boveda vault update --shipping-address TEXT`"
                    ),
                }
                println!("then: boveda offline shipping --import-job {} --carrier C --tracking T", report.import_job);
            }
            return Ok(Outcome::Ok);
        }
        let short = format!(
            "the drives are full: {} in {} object(s) still need a drive",
            size(report.remaining_bytes),
            report.remaining
        );
        if !std::io::stdin().is_terminal() {
            bail!(
                "{short}; run diskprep again with another --drive (what the drives hold is kept, and the run continues from there)"
            );
        }
        eprint!("{short}. Path of another drive (empty to stop): ");
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        let next = line.trim();
        if next.is_empty() {
            bail!("{short}; run diskprep again with another --drive to continue");
        }
        drives.push(PathBuf::from(next));
    }
}

/// `offline shipping`
fn shipping(ctx: &Ctx, import_job: String, carrier: String, tracking: String) -> Result<Outcome> {
    let vault = ctx.open()?;
    let now = ctx.clock()?.now();
    let job = boveda_service::record_shipping(&**vault.store(), &import_job, &carrier, &tracking, now)?;
    if ctx.json() {
        ctx.print_json(&job)?;
    } else {
        println!(
            "import job {}: Shipping with {carrier}, tracking {tracking}; the drives must arrive by {}",
            job.name,
            job.deadline.map_or_else(|| "-".into(), time)
        );
    }
    Ok(Outcome::Ok)
}

/// `offline import`
fn import(
    ctx: &Ctx,
    import_job: String,
    drives: Vec<PathBuf>,
    drive_keys: Vec<String>,
    force: bool,
    from_staging: Option<PathBuf>,
) -> Result<Outcome> {
    if drives.is_empty() && from_staging.is_none() {
        bail!("give the drives that arrived (--drive PATH), or the staging folder (--from-staging DIR)");
    }
    let from_staging = match from_staging {
        Some(dir) => Some(boveda_service::find_seed(&dir, Some(&import_job))?),
        None => None,
    };
    let store = boveda_service::open_vault_store(ctx.vault.as_deref())?;
    let mut keys = BTreeMap::new();
    for k in drive_keys {
        let Some((id, key)) = k.split_once('=') else {
            bail!("--drive-key {k:?}: give DRIVE-ID=KEY");
        };
        keys.insert(id.to_string(), key.to_string());
    }
    let now = ctx.clock()?.now();
    let report = boveda_service::import(
        &*store,
        &boveda_service::ImportRequest {
            name: &import_job,
            drives: &drives,
            keys: &keys,
            from_staging: from_staging.as_deref(),
            force,
            now,
            host: &hostname(),
        },
    )?;
    if ctx.json() {
        ctx.print_json(&report)?;
    } else {
        for n in &report.notes {
            eprintln!("note: {n}");
        }
        for p in &report.problems {
            eprintln!("problem: {p}");
        }
        println!(
            "import job {}: {}; {} object(s), {} uploaded now; {} of {} objects in the store",
            report.job.name,
            report.job.state.as_str(),
            report.uploaded,
            size(report.uploaded_bytes),
            report.job.imported,
            report.job.objects
        );
        print_drives(&report.job);
    }
    if report.job.state != boveda_service::ImportState::Completed {
        bail!(
            "import job {} is {} with {} problem(s): run the import again once they are solved",
            report.job.name,
            report.job.state.as_str(),
            report.problems.len()
        );
    }
    Ok(Outcome::Ok)
}

/// `offline status`
fn status(ctx: &Ctx, import_job: Option<String>) -> Result<Outcome> {
    let vault = ctx.open()?;
    let now = ctx.clock()?.now();
    let jobs: Vec<ImportJob> = match import_job {
        Some(name) => vec![find_import_job(&**vault.store(), &name)?],
        None => list_import_jobs(&**vault.store())?,
    };
    if ctx.json() {
        let list: Vec<_> = jobs
            .iter()
            .map(|j| {
                let mut v = serde_json::to_value(j).unwrap_or_default();
                v["shown_state"] = serde_json::json!(j.shown_state(now));
                v
            })
            .collect();
        ctx.print_json(&list)?;
    } else {
        let rows: Vec<Vec<String>> = jobs
            .iter()
            .map(|j| {
                vec![
                    j.name.clone(),
                    j.shown_state(now),
                    j.drives.len().to_string(),
                    j.carrier.clone().unwrap_or_else(|| "-".into()),
                    j.tracking.clone().unwrap_or_else(|| "-".into()),
                    j.deadline.map_or_else(|| "-".into(), time),
                    format!("{} / {}", j.imported, j.objects),
                ]
            })
            .collect();
        print_table(&["IMPORT JOB", "STATE", "DRIVES", "CARRIER", "TRACKING", "DEADLINE", "IMPORTED"], &rows);
        if let [only] = jobs.as_slice() {
            print_drives(only);
            for h in &only.history {
                println!("{}  {}", time(h.time), h.event);
            }
        }
    }
    Ok(Outcome::Ok)
}

fn print_drives(job: &ImportJob) {
    if job.drives.is_empty() {
        return;
    }
    let rows: Vec<Vec<String>> = job
        .drives
        .iter()
        .map(|d| {
            vec![d.id.clone(), d.state.as_str().into(), d.objects.to_string(), size(d.bytes), d.problems.join("; ")]
        })
        .collect();
    print_table(&["DRIVE", "STATE", "OBJECTS", "SIZE", "PROBLEMS"], &rows);
}

/// `123`, `10K`, `500M`, `2G`, `1T` (powers of 1024).
fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim();
    let (digits, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = digits.parse().with_context(|| format!("{text:?} is not a size such as 500M or 2G"))?;
    let shift = match unit.to_ascii_uppercase().trim_end_matches("IB").trim_end_matches('B') {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => bail!("{text:?} is not a size such as 500M or 2G"),
    };
    n.checked_mul(1 << shift).with_context(|| format!("{text:?} is too large"))
}
