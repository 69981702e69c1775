//! `restore`: files, disks and VMs from a point, or a point served over NBD.

use anyhow::{Context, Result, bail};
use boveda_service::{DiskOutputFormat, RestoreReport, RestoreRequest, VmTarget, find_item, find_point};

use super::Ctx;
use crate::Outcome;
use crate::args::{ImageFormat, RestoreArgs};
use crate::output::{RestoreBar, size};

pub fn restore(ctx: &Ctx, args: RestoreArgs) -> Result<Outcome> {
    let vault = ctx.open_copy(args.from_secondary)?;
    let item = find_item(&vault, &args.item)?;
    let point = find_point(&vault, &item, &args.point)?;
    if let Some(socket) = &args.serve_nbd {
        return serve_nbd(ctx, &vault, &item, &point, socket);
    }
    if let Some(file) = &args.tar {
        let id = point.id.to_hex();
        let stats = if file.as_os_str() == "-" {
            let out = std::io::BufWriter::new(std::io::stdout().lock());
            boveda_service::download_point(&vault, &item, &id, &args.paths, out)?
        } else {
            // written whole or not at all: a partial file then renamed
            let part = file.with_extension("tar.part");
            let write = || -> Result<boveda_service::TarStats> {
                let out = std::fs::File::create(&part).with_context(|| format!("creating {}", part.display()))?;
                let mut out = std::io::BufWriter::new(out);
                let stats = boveda_service::download_point(&vault, &item, &id, &args.paths, &mut out)?;
                std::io::Write::flush(&mut out).with_context(|| format!("writing {}", part.display()))?;
                std::fs::rename(&part, file).with_context(|| format!("naming {}", file.display()))?;
                Ok(stats)
            };
            write().inspect_err(|_| {
                let _ = std::fs::remove_file(&part);
            })?
        };
        eprintln!("{} files, {} folders, {} in the archive", stats.files, stats.dirs, size(stats.bytes));
        return Ok(Outcome::Ok);
    }
    let clock = ctx.clock()?;
    let env = ctx.job_env(clock.as_ref());
    let vm = match (&args.as_new_vm, args.replace_disks) {
        (Some(name), _) => VmTarget::NewVm { name: name.clone(), start: args.start },
        (None, true) => VmTarget::ReplaceDisks { confirm: args.confirm.clone() },
        (None, false) => VmTarget::Disks,
    };
    if vm != VmTarget::Disks && !matches!(item.source, boveda_service::ItemSource::Vm { .. }) {
        bail!("--as-new-vm and --replace-disks are for VM items; {} is not one", item.name);
    }
    let target = match (args.target, &vm) {
        (Some(t), _) => t,
        (None, VmTarget::ReplaceDisks { .. }) => std::path::PathBuf::new(),
        (None, _) => bail!("a restore needs --target (or --serve-nbd SOCKET)"),
    };
    let format = match args.format {
        ImageFormat::Raw => DiskOutputFormat::Raw,
        ImageFormat::Qcow2 => DiskOutputFormat::Qcow2,
    };
    let req = RestoreRequest { target, paths: args.paths, format, vm, within: None };
    let bar = RestoreBar::new();
    let (job, result) = boveda_service::restore_job(&vault, &env, &item, &point, &req, Some(&bar))?;
    bar.finish();
    let report = result.with_context(|| format!("restore job {} {}", job.id.short(), job.state.as_str()))?;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    print_restore_errors(&report.errors);
    if ctx.json() {
        ctx.print_json(&report)?;
    } else {
        print_restore(&report);
    }
    if !report.errors.is_empty() {
        bail!("restore job {} Failed: {}", job.id.short(), boveda_service::restore_failure(&report));
    }
    // the job's own warnings (a record it could not write, on a full or
    // read-only store)
    let job_only: Vec<&String> = job.warnings.iter().filter(|w| !report.warnings.contains(w)).collect();
    for w in &job_only {
        eprintln!("warning: {w}");
    }
    Ok(if report.warnings.is_empty() && job_only.is_empty() { Outcome::Ok } else { Outcome::Warnings })
}

pub(super) fn print_restore(r: &RestoreReport) {
    let point = &r.point[..8.min(r.point.len())];
    if let Some(vm) = &r.vm {
        for (dev, p) in &vm.disks {
            println!("disk {dev}: {}", p.display());
        }
        match (&vm.definition, vm.defined) {
            (Some(d), false) => {
                println!("new VM {} defined in {} (define it with `virsh define`)", vm.domain, d.display())
            }
            (Some(d), true) => println!(
                "new VM {} defined in libvirt from {}{}",
                vm.domain,
                d.display(),
                if vm.started { ", and started" } else { " (not started)" }
            ),
            (None, _) => {
                println!("the disks of VM {} are the point's now; its definition is kept", vm.domain);
                for c in &vm.safety_copies {
                    println!("safety copy of the disk before: {}", c.display());
                }
            }
        }
    } else if !r.paths.is_empty() {
        println!("restored {} path(s) of point {point} of item {} into {}", r.paths.len(), r.item, r.target.display());
    } else {
        println!(
            "restored point {point} of item {} into {}: {} files ({} already complete), {} dirs, {} other, {} written in {:.1}s",
            r.item,
            r.target.display(),
            r.files,
            r.files_skipped,
            r.dirs,
            r.other,
            size(r.bytes_written),
            r.seconds
        );
    }
}

/// Instant restore: the point's disks over NBD until Ctrl-C.
pub(super) fn serve_nbd(
    ctx: &Ctx,
    vault: &boveda_service::Vault,
    item: &boveda_service::Item,
    point: &boveda_service::RecoveryPoint,
    socket: &std::path::Path,
) -> Result<Outcome> {
    let stop = super::signals::stop_on_signals();
    let ready = |disks: &[(String, u64)]| {
        if ctx.json() {
            let disks: Vec<_> =
                disks.iter().map(|(name, bytes)| serde_json::json!({"disk": name, "size": bytes})).collect();
            let _ = ctx.print_json(&serde_json::json!({"point": point.id.to_hex(), "socket": socket, "disks": disks}));
            return;
        }
        println!("serving point {} of item {} read-only on {}:", point.id.short(), item.name, socket.display());
        for (name, bytes) in disks {
            println!("  disk {name} ({}): nbd+unix:///{name}?socket={}", size(*bytes), socket.display());
        }
        println!("stop with Ctrl-C");
    };
    boveda_service::serve_point_disks(vault, item, point, socket, stop, ready)
        .with_context(|| format!("serving on {}", socket.display()))?;
    Ok(Outcome::Ok)
}

/// How many failed files are named one by one before only counts are given.
const ERRORS_LISTED: usize = 10;

/// A few failures by name; past that, one line per reason with its count
/// (a full disk fails every remaining file for the same reason).
pub(super) fn print_restore_errors(errors: &[String]) {
    for e in errors.iter().take(ERRORS_LISTED) {
        eprintln!("error: {e}");
    }
    if errors.len() > ERRORS_LISTED {
        eprintln!(
            "error: ... and {} more file(s) not restored (`--output json` lists them all)",
            errors.len() - ERRORS_LISTED
        );
    }
}
