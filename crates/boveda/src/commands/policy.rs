use anyhow::{Result, bail};
use boveda_service::{
    ExpiryChange, Frequency, Policy, PolicyPatch, Weekday, apply_policy_update, create_policy, delete_policy,
    find_policy, list_policies, parse_weekday, plan_policy_update,
};

use super::Ctx;
use crate::Outcome;
use crate::args::{PolicyArgs, PolicyCmd};
use crate::output::{confirm, opt_time, print_table, time};

fn weekday(s: &str) -> Result<Weekday> {
    Ok(parse_weekday(s)?)
}

/// A policy from flags; with `base`, flags left out keep its values.
fn build(a: PolicyArgs, base: Option<&Policy>) -> Result<Policy> {
    let patch = PolicyPatch {
        name: a.name,
        frequency: a.schedule.map(|s| match s.as_str() {
            "weekly" => Frequency::Weekly,
            "hourly" => Frequency::Hourly,
            _ => Frequency::Daily,
        }),
        days: a.days.iter().map(|d| weekday(d)).collect::<Result<Vec<_>>>()?,
        times: a.times,
        time_zone: a.time_zone,
        every_hours: a.every_hours,
        window_start: a.window_start,
        window_hours: a.window_hours,
        daily_keep: a.daily_keep,
        weekly_keep: a.weekly_keep,
        weekly_on: a.weekly_on.iter().map(|d| weekday(d)).collect::<Result<Vec<_>>>()?,
        monthly_keep: a.monthly_keep,
        monthly_on: a.monthly_on,
        yearly_keep: a.yearly_keep,
        yearly_month: a.yearly_month,
        yearly_on: a.yearly_on,
        drop_rules: a.drop_rule,
        verify_every_days: a.verify_every_days,
    };
    Ok(Policy::patched(base, patch)?)
}

fn describe(p: &Policy) -> (String, String) {
    let s = &p.schedule;
    let when = match s.frequency {
        Frequency::Daily => format!("daily at {} ({})", s.times.join(", "), s.time_zone),
        Frequency::Weekly => format!("weekly on {:?} at {} ({})", s.days, s.times.join(", "), s.time_zone),
        Frequency::Hourly => match &s.window {
            Some(w) => format!(
                "every {} hours from {} for {} hours: {} ({})",
                w.every_hours,
                w.start,
                w.hours,
                s.times.join(", "),
                s.time_zone
            ),
            None => format!("hourly at {} ({})", s.times.join(", "), s.time_zone),
        },
    };
    let r = &p.retention;
    let mut keep = Vec::new();
    if let Some(d) = r.daily_days {
        keep.push(format!("daily {d} days"));
    }
    if let Some(w) = &r.weekly {
        keep.push(format!("weekly ({:?}) {} weeks", w.days, w.weeks));
    }
    if let Some(m) = &r.monthly {
        keep.push(format!("monthly ({}) {} months", m.on.0, m.months));
    }
    if let Some(y) = &r.yearly {
        keep.push(format!("yearly (month {}, {}) {} years", y.month, y.on.0, y.years));
    }
    if let Some(n) = p.verify_every_days {
        keep.push(format!("newest point verified every {n} day(s)"));
    }
    (when, keep.join("; "))
}

pub fn run(ctx: &Ctx, cmd: PolicyCmd) -> Result<Outcome> {
    let vault = ctx.open()?;
    match cmd {
        PolicyCmd::Create(a) => {
            let p = build(*a, None)?;
            create_policy(&vault, &p)?;
            if ctx.json() {
                ctx.print_json(&p)?;
            } else {
                println!("created policy {}", p.name);
            }
        }
        PolicyCmd::List => {
            let all = list_policies(&vault)?;
            if ctx.json() {
                ctx.print_json(&all)?;
            } else {
                let rows: Vec<_> = all
                    .iter()
                    .map(|p| {
                        let (when, keep) = describe(p);
                        vec![p.name.clone(), when, keep]
                    })
                    .collect();
                print_table(&["NAME", "SCHEDULE", "RETENTION"], &rows);
            }
        }
        PolicyCmd::Show { name } => {
            let p = find_policy(&vault, &name)?;
            if ctx.json() {
                ctx.print_json(&p)?;
            } else {
                let (when, keep) = describe(&p);
                let rows = vec![
                    vec!["name".into(), p.name.clone()],
                    vec!["schedule".into(), when],
                    vec!["retention".into(), keep],
                    vec!["created".into(), time(p.created)],
                ];
                print_table(&["FIELD", "VALUE"], &rows);
            }
        }
        PolicyCmd::Update { args, yes } => {
            let base = find_policy(&vault, &args.name)?;
            let new = build(*args, Some(&base))?;
            let plan = plan_policy_update(&vault, &base.name, &new, ctx.clock()?.now())?;
            let show = |c: &ExpiryChange| {
                vec![
                    c.item.clone(),
                    c.point.short(),
                    time(c.time),
                    opt_time(c.before),
                    opt_time(c.after),
                    c.kept_by.clone(),
                ]
            };
            if !plan.deleted.is_empty() && !ctx.json() {
                println!(
                    "these {} point(s) expire under the new rules and the next prune deletes them:",
                    plan.deleted.len()
                );
                let rows: Vec<_> = plan.deleted.iter().map(show).collect();
                print_table(&["ITEM", "POINT", "TIME", "EXPIRED", "NOW EXPIRES", "RULE"], &rows);
            }
            if !plan.deleted.is_empty() && !yes && !confirm("update the policy?")? {
                bail!(
                    "policy {} not changed: {} point(s) would be deleted; run again with --yes to proceed",
                    base.name,
                    plan.deleted.len()
                );
            }
            apply_policy_update(&vault, &plan, &ctx.by(), ctx.clock()?.as_ref())?;
            if ctx.json() {
                ctx.print_json(&plan)?;
            } else {
                if !plan.changed.is_empty() {
                    println!("{} point(s) get a new expiry:", plan.changed.len());
                    let rows: Vec<_> = plan.changed.iter().map(show).collect();
                    print_table(&["ITEM", "POINT", "TIME", "EXPIRED", "NOW EXPIRES", "RULE"], &rows);
                }
                println!(
                    "updated policy {}: {} point(s) now expired, {} with a new expiry",
                    base.name,
                    plan.deleted.len(),
                    plan.changed.len()
                );
            }
        }
        PolicyCmd::Delete { name } => {
            let p = delete_policy(&vault, &name)?;
            if !ctx.json() {
                println!("deleted policy {}", p.name);
            }
        }
    }
    Ok(Outcome::Ok)
}
