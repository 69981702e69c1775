use anyhow::{Result, bail};
use boveda_service::{
    DaySpec, Frequency, MonthlyRule, Policy, Retention, Schedule, Weekday, WeeklyRule, YearlyRule, create_policy,
    delete_policy, find_policy, list_policies, parse_weekday,
};
use boveda_vault::RecordId;

use super::Ctx;
use crate::Outcome;
use crate::args::{PolicyArgs, PolicyCmd};
use crate::output::{print_table, time};

fn weekday(s: &str) -> Result<Weekday> {
    Ok(parse_weekday(s)?)
}

fn build(a: PolicyArgs) -> Result<Policy> {
    let orphan = [
        (!a.weekly_on.is_empty() && a.weekly_keep.is_none(), "--weekly-on needs --weekly-keep"),
        (a.monthly_on.is_some() && a.monthly_keep.is_none(), "--monthly-on needs --monthly-keep"),
        (
            (a.yearly_on.is_some() || a.yearly_month.is_some()) && a.yearly_keep.is_none(),
            "--yearly-on and --yearly-month need --yearly-keep",
        ),
    ];
    if let Some((_, why)) = orphan.iter().find(|(bad, _)| *bad) {
        bail!("policy field {why}");
    }
    let days = a.days.iter().map(|d| weekday(d)).collect::<Result<Vec<_>>>()?;
    let weekly_on = a.weekly_on.iter().map(|d| weekday(d)).collect::<Result<Vec<_>>>()?;
    let zone = a.time_zone.unwrap_or_else(|| jiff::tz::TimeZone::system().iana_name().unwrap_or("UTC").to_string());
    Ok(Policy {
        id: RecordId::random(),
        name: a.name,
        schedule: Schedule {
            frequency: if a.schedule == "weekly" { Frequency::Weekly } else { Frequency::Daily },
            days,
            times: a.times,
            time_zone: zone,
        },
        retention: Retention {
            daily_days: a.daily_keep,
            weekly: a.weekly_keep.map(|weeks| WeeklyRule { days: weekly_on, weeks }),
            monthly: a.monthly_keep.map(|months| MonthlyRule { on: DaySpec(a.monthly_on.unwrap_or_default()), months }),
            yearly: a.yearly_keep.map(|years| YearlyRule {
                month: a.yearly_month.unwrap_or(0),
                on: DaySpec(a.yearly_on.unwrap_or_default()),
                years,
            }),
        },
        created: jiff::Timestamp::now(),
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
            let p = build(*a)?;
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
        PolicyCmd::Delete { name } => {
            let p = delete_policy(&vault, &name)?;
            if !ctx.json() {
                println!("deleted policy {}", p.name);
            }
        }
    }
    Ok(Outcome::Ok)
}
