use anyhow::{Result, bail};
use boveda_service::RecordId;
use boveda_service::{
    DaySpec, ExpiryChange, Frequency, MonthlyRule, Policy, Retention, Schedule, Weekday, WeeklyRule, YearlyRule,
    apply_policy_update, create_policy, delete_policy, find_policy, list_policies, parse_weekday, plan_policy_update,
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
    if base.is_none() && !a.drop_rule.is_empty() {
        bail!("policy field --drop-rule: only for `policy update`");
    }
    let days = a.days.iter().map(|d| weekday(d)).collect::<Result<Vec<_>>>()?;
    let weekly_on = a.weekly_on.iter().map(|d| weekday(d)).collect::<Result<Vec<_>>>()?;
    let fresh = Policy::default_policy();
    let base_schedule = base.map(|b| b.schedule.clone());
    let frequency = match (a.schedule.as_deref(), &base_schedule) {
        (Some("weekly"), _) => Frequency::Weekly,
        (Some(_), _) => Frequency::Daily,
        (None, Some(s)) => s.frequency,
        (None, None) => Frequency::Daily,
    };
    let days = match (&base_schedule, days.is_empty()) {
        (Some(s), true) if frequency == s.frequency => s.days.clone(),
        _ => days,
    };
    let times = match (&base_schedule, a.times.is_empty()) {
        (Some(s), true) => s.times.clone(),
        _ => a.times,
    };
    let time_zone = a.time_zone.or_else(|| base_schedule.as_ref().map(|s| s.time_zone.clone()));
    let base_r = base.map(|b| b.retention.clone()).unwrap_or_default();
    let dropped = |rule: &str| a.drop_rule.iter().any(|r| r == rule);
    let orphan = [
        (
            !weekly_on.is_empty() && a.weekly_keep.is_none() && base_r.weekly.is_none(),
            "--weekly-on needs --weekly-keep",
        ),
        (
            a.monthly_on.is_some() && a.monthly_keep.is_none() && base_r.monthly.is_none(),
            "--monthly-on needs --monthly-keep",
        ),
        (
            (a.yearly_on.is_some() || a.yearly_month.is_some()) && a.yearly_keep.is_none() && base_r.yearly.is_none(),
            "--yearly-on and --yearly-month need --yearly-keep",
        ),
    ];
    if let Some((_, why)) = orphan.iter().find(|(bad, _)| *bad) {
        bail!("policy field {why}");
    }
    let weekly = match (a.weekly_keep, &base_r.weekly) {
        _ if dropped("weekly") => None,
        (Some(weeks), b) => Some(WeeklyRule {
            days: if weekly_on.is_empty() { b.as_ref().map(|w| w.days.clone()).unwrap_or_default() } else { weekly_on },
            weeks,
        }),
        (None, Some(b)) => {
            Some(WeeklyRule { days: if weekly_on.is_empty() { b.days.clone() } else { weekly_on }, ..b.clone() })
        }
        (None, None) => None,
    };
    let monthly = match (a.monthly_keep, &base_r.monthly) {
        _ if dropped("monthly") => None,
        (keep, b) if keep.is_some() || b.is_some() => Some(MonthlyRule {
            on: a
                .monthly_on
                .map(DaySpec)
                .or_else(|| b.as_ref().map(|m| m.on.clone()))
                .unwrap_or(DaySpec(String::new())),
            months: keep.or(b.as_ref().map(|m| m.months)).unwrap_or(0),
        }),
        _ => None,
    };
    let yearly = match (a.yearly_keep, &base_r.yearly) {
        _ if dropped("yearly") => None,
        (keep, b) if keep.is_some() || b.is_some() => Some(YearlyRule {
            month: a.yearly_month.or(b.as_ref().map(|y| y.month)).unwrap_or(0),
            on: a.yearly_on.map(DaySpec).or_else(|| b.as_ref().map(|y| y.on.clone())).unwrap_or(DaySpec(String::new())),
            years: keep.or(b.as_ref().map(|y| y.years)).unwrap_or(0),
        }),
        _ => None,
    };
    let daily_days = if dropped("daily") { None } else { a.daily_keep.or(base_r.daily_days) };
    Ok(Policy {
        id: base.map_or_else(RecordId::random, |b| b.id),
        name: a.name,
        schedule: Schedule { frequency, days, times, time_zone: time_zone.unwrap_or(fresh.schedule.time_zone) },
        retention: Retention { daily_days, weekly, monthly, yearly },
        created: base.map_or_else(jiff::Timestamp::now, |b| b.created),
    })
}

fn describe(p: &Policy) -> (String, String) {
    let s = &p.schedule;
    let when = match s.frequency {
        Frequency::Daily => format!("daily at {} ({})", s.times.join(", "), s.time_zone),
        Frequency::Weekly => format!("weekly on {:?} at {} ({})", s.days, s.times.join(", "), s.time_zone),
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
            apply_policy_update(&vault, &plan)?;
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
