//! `alert`: list alerts (with their state), acknowledge one, retry the
//! webhook.

use anyhow::Result;
use boveda_service::{acknowledge_alert, list_alerts, retry_alerts};

use super::Ctx;
use crate::Outcome;
use crate::args::AlertCmd;
use crate::output::{print_table, time};

pub fn alert(ctx: &Ctx, cmd: AlertCmd) -> Result<Outcome> {
    let retry = match cmd {
        AlertCmd::List { retry } => retry,
        AlertCmd::Ack { id } => {
            let vault = ctx.open()?;
            let alert = acknowledge_alert(&vault, &id, &ctx.by(), ctx.clock()?.now())?;
            if ctx.json() {
                ctx.print_json(&alert)?;
            } else {
                println!("alert {} acknowledged ({})", alert.id.short(), alert.state.as_str());
            }
            return Ok(Outcome::Ok);
        }
    };
    let vault = ctx.open()?;
    if retry {
        let n = retry_alerts(&vault)?;
        if !ctx.json() {
            eprintln!("{n} alert(s) delivered to the webhook now");
        }
    }
    let alerts = list_alerts(&vault)?;
    if ctx.json() {
        ctx.print_json(&alerts)?;
    } else {
        let rows: Vec<_> = alerts
            .iter()
            .map(|a| {
                vec![
                    a.id.short(),
                    a.state.as_str().into(),
                    format!("{:?}", a.severity),
                    time(a.time),
                    a.item.clone().unwrap_or_else(|| "-".into()),
                    a.operation.as_str().into(),
                    a.job.short(),
                    if a.delivered { "yes".into() } else { format!("no ({} attempts)", a.attempts) },
                    format!("{} What to do: {}", a.reason, a.action),
                ]
            })
            .collect();
        print_table(&["ALERT", "STATE", "SEVERITY", "TIME", "ITEM", "OPERATION", "JOB", "DELIVERED", "REASON"], &rows);
    }
    Ok(Outcome::Ok)
}
