//! `recoverypoint verify`: booting VM points, drilling file and disk ones.

use anyhow::{Result, bail};
use boveda_service::{PointVerification, VerifySettings, VerifyTask, find_item, save_verify_settings, verify_many};

use super::Ctx;
use crate::Outcome;
use crate::args_verify::{Accel, VerifyArgs};
use crate::output::size;
use boveda_service::printable;

fn settings_for(base: Option<VerifySettings>, a: &VerifyArgs) -> Result<VerifySettings> {
    let mut s = base.unwrap_or_default();
    if let Some(v) = a.max_cpus {
        s.limits.max_cpus = v;
    }
    if let Some(v) = a.max_memory_mib {
        s.limits.max_memory_mib = v;
    }
    if let Some(v) = a.time_limit {
        s.limits.time_limit_secs = v;
    }
    if let Some(m) = &a.marker {
        s.marker = Some(m.clone());
    }
    if let Some(c) = &a.probe_command {
        s.probe = Some(boveda_service::Probe::Command(c.split_whitespace().map(str::to_string).collect()));
    }
    if let Some(p) = a.probe_port {
        s.probe = Some(boveda_service::Probe::Port(p));
    }
    if let Some(acc) = a.accel {
        s.accel = Some(if acc == Accel::Kvm { "kvm" } else { "tcg" }.to_string());
    }
    if let Some(p) = &a.sample {
        let n: u8 = p
            .trim_end_matches('%')
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("--sample {p:?}: give a percentage such as 10%"))?;
        s.sample_percent = Some(n);
    }
    if let Some(d) = &a.scratch {
        s.scratch = Some(d.clone());
    }
    Ok(s)
}

fn print(v: &PointVerification) {
    let point = v.point.short();
    let what = if v.passed { "verified" } else { "FAILED verification" };
    println!("point {point} of {}: {what} in {:.1} s", v.item_name, v.seconds);
    if let Some(b) = &v.boot {
        if let (Some(by), Some(s)) = (&b.answered_by, b.seconds_to_answer) {
            println!(
                "  booted: the {by} answered after {s:.1} s ({}, {} CPU, {} MiB)",
                b.accelerator, b.cpus, b.memory_mib
            );
        }
        if let Some(p) = &b.probe {
            println!(
                "  probe {}: {}{}",
                p.probe,
                if p.passed { "passed" } else { "failed" },
                if p.output.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", p.output.lines().next().unwrap_or_default())
                }
            );
        }
        if let (Some(read), Some(disks)) = (v.bytes_read, v.disk_bytes) {
            println!("  read {} from the vault for disks of {}", size(read), size(disks));
        }
    }
    if let Some(d) = &v.drill {
        let sample = d.sample_percent.map(|p| format!(" (a {p}% sample)")).unwrap_or_default();
        println!(
            "  restored {} file(s), {}{sample} in {:.1} s ({}/s); {} chunk(s) compared",
            d.files,
            size(d.bytes),
            d.restore_seconds,
            size(d.bytes_per_second as u64),
            d.chunks_compared
        );
        println!("  a full restore takes about {:.1} s", d.full_restore_seconds);
        for m in &d.mismatches {
            println!("  differs: {}", printable(m));
        }
    }
    if let Some(r) = &v.reason {
        println!("  why: {}", printable(r));
        if let Some(b) = &v.boot {
            println!("  the console's last lines:");
            for l in &b.console_tail {
                println!("    {}", printable(l));
            }
        }
    }
}

pub fn verify(ctx: &Ctx, args: VerifyArgs) -> Result<Outcome> {
    if args.point.is_some() && args.items.len() > 1 {
        bail!("--point names a point of one item: give one item with it");
    }
    let vault = ctx.open()?;
    let mut items = Vec::new();
    for name in &args.items {
        let item = find_item(&vault, name)?;
        let settings = settings_for(item.verify.clone(), &args)?;
        settings.check()?;
        if args.save {
            save_verify_settings(&vault, &item, &settings)?;
        }
        items.push((item, settings));
    }
    let clock = ctx.clock()?;
    let env = ctx.job_env(clock.as_ref());
    let tasks: Vec<VerifyTask<'_>> = items
        .iter()
        .map(|(item, settings)| VerifyTask { item, point: args.point.as_deref(), settings: settings.clone() })
        .collect();
    let results = verify_many(&vault, &env, &tasks, args.memory_budget_mib);
    let mut shown = Vec::new();
    let mut failed = Vec::new();
    for ((item, _), r) in items.iter().zip(results) {
        match r {
            Ok((job, Ok(v))) => {
                if !v.passed {
                    let why = v.reason.as_deref().unwrap_or("see the job");
                    failed.push(format!("{} (job {}): {}", item.name, job.id.short(), printable(why)));
                }
                shown.push(v);
            }
            Ok((job, Err(e))) => {
                failed.push(format!("{}: job {} {}: {e}", item.name, job.id.short(), job.state.as_str()))
            }
            Err(e) => failed.push(format!("{}: {e}", item.name)),
        }
    }
    if ctx.json() {
        ctx.print_json(&shown)?;
    } else {
        shown.iter().for_each(print);
    }
    if !failed.is_empty() {
        bail!("verification failed: {}", failed.join("; "));
    }
    Ok(Outcome::Ok)
}
