//! `alert`: list alerts and retry their webhook.

use anyhow::Result;
use boveda_service::{list_alerts, retry_alerts};

use super::Ctx;
use crate::Outcome;
use crate::args::AlertCmd;
use crate::output::{print_table, time};

pub fn alert(ctx: &Ctx, cmd: AlertCmd) -> Result<Outcome> {
    let AlertCmd::List { retry } = cmd;
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
                    format!("{:?}", a.severity),
                    time(a.time),
                    a.item.clone().unwrap_or_else(|| "-".into()),
                    a.operation.as_str().into(),
                    a.job.short(),
                    if a.delivered { "yes".into() } else { format!("no ({} attempts)", a.attempts) },
                    a.reason.clone(),
                ]
            })
            .collect();
        print_table(&["SEVERITY", "TIME", "ITEM", "OPERATION", "JOB", "DELIVERED", "REASON"], &rows);
    }
    Ok(Outcome::Ok)
}
