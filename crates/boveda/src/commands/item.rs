use std::path::PathBuf;

use anyhow::Result;
use boveda_service::Vault;
use boveda_service::{
    ConsistencyConfig, ItemSource, NewItem, add_disk_item, add_files_item, add_vm_item, discover_vms, find_item,
    list_item_points, list_policies,
};

use super::Ctx;
use crate::Outcome;
use crate::args::{ItemAdd, ItemCmd};
use crate::output::{opt_time, print_table, size, time};

pub fn run(ctx: &Ctx, cmd: ItemCmd) -> Result<Outcome> {
    let vault = ctx.open()?;
    match cmd {
        ItemCmd::Add(a) => add(ctx, &vault, a),
        ItemCmd::List => list(ctx, &vault),
        ItemCmd::Discover { libvirt_dir } => discover(ctx, &vault, libvirt_dir),
        ItemCmd::Show { item } => show(ctx, &vault, item),
    }
}

/// `item add`
fn add(ctx: &Ctx, vault: &Vault, add: ItemAdd) -> Result<Outcome> {
    let item = match add {
        ItemAdd::Files { name, paths, excludes, host: Some(host) } => {
            boveda_service::add_item(vault, &NewItem::Files { name, paths, excludes, host: Some(host) })?
        }
        ItemAdd::Disk { name, path, host: Some(host), .. } => {
            boveda_service::add_item(vault, &NewItem::Disk { name, path, host: Some(host) })?
        }
        ItemAdd::Files { name, paths, excludes, host: None } => add_files_item(vault, &name, &paths, &excludes)?,
        ItemAdd::Disk { name, path, consistency_config, host: None } => {
            let cfg = consistency_config.as_deref().map(ConsistencyConfig::load).transpose()?;
            add_disk_item(vault, &name, &path, cfg)?
        }
        ItemAdd::Vm { name, domain_xml, qmp, guest_agent, host: Some(host), .. } => {
            let vm = NewItem::Vm { name, definition: domain_xml, qmp, guest_agent, host: Some(host) };
            boveda_service::add_item(vault, &vm)?
        }
        ItemAdd::Vm { name, domain_xml, qmp, guest_agent, consistency_config, host: None } => {
            let cfg = consistency_config.as_deref().map(ConsistencyConfig::load).transpose()?;
            add_vm_item(vault, &name, &domain_xml, qmp.as_deref(), guest_agent.as_deref(), cfg)?
        }
    };
    if ctx.json() {
        ctx.print_json(&item)?;
    } else {
        println!("added item {} ({}); status: Warning (initial backup pending)", item.name, item.id.short());
    }
    Ok(Outcome::Ok)
}

/// `item list`
fn list(ctx: &Ctx, vault: &Vault) -> Result<Outcome> {
    let rows = boveda_service::item_overview(vault, ctx.clock()?.now())?;
    if ctx.json() {
        ctx.print_json(&rows)?;
    } else {
        let table: Vec<_> = rows
            .iter()
            .map(|r| {
                vec![
                    r.name.clone(),
                    r.kind.clone(),
                    r.host.clone().unwrap_or_else(|| "-".into()),
                    r.protection.clone(),
                    r.policy.clone().unwrap_or_else(|| "-".into()),
                    r.last_backup_status.clone(),
                    opt_time(r.last_backup),
                    opt_time(r.next_backup),
                    r.recovery_points.to_string(),
                ]
            })
            .collect();
        print_table(
            &[
                "NAME",
                "TYPE",
                "HOST",
                "PROTECTION",
                "POLICY",
                "LAST BACKUP STATUS",
                "LAST BACKUP",
                "NEXT BACKUP",
                "POINTS",
            ],
            &table,
        );
    }
    Ok(Outcome::Ok)
}

/// `item discover`
fn discover(ctx: &Ctx, vault: &Vault, libvirt_dir: PathBuf) -> Result<Outcome> {
    let found = discover_vms(vault, &libvirt_dir)?;
    if ctx.json() {
        ctx.print_json(&found)?;
    } else {
        let rows: Vec<_> = found
            .iter()
            .map(|d| {
                let disks: Vec<String> = d.disks.iter().map(|(t, p)| format!("{t}={}", p.display())).collect();
                let status = match (&d.item, &d.problem) {
                    (Some(i), _) => format!("protected by {i}"),
                    (None, Some(p)) => format!("cannot protect: {p}"),
                    (None, None) => "not protected".into(),
                };
                vec![d.domain.clone(), d.definition.display().to_string(), disks.join(" "), status]
            })
            .collect();
        print_table(&["DOMAIN", "DEFINITION", "DISKS", "STATUS"], &rows);
    }
    Ok(Outcome::Ok)
}

/// `item show`
fn show(ctx: &Ctx, vault: &Vault, item: String) -> Result<Outcome> {
    let item = find_item(vault, &item)?;
    let points = list_item_points(vault, &item)?;
    if ctx.json() {
        ctx.print_json(&serde_json::json!({ "item": item, "recovery_points": points.len() }))?;
    } else {
        let mut rows = vec![
            vec!["name".into(), item.name.clone()],
            vec!["id".into(), item.id.to_hex()],
            vec!["type".into(), item.source.type_name().into()],
            vec!["created".into(), time(item.created)],
            vec!["protection".into(), item.protection.state.as_str().into()],
        ];
        let policies = list_policies(vault)?;
        if let Some(p) = policies.iter().find(|p| Some(p.id) == item.protection.policy) {
            rows.push(vec!["policy".into(), p.name.clone()]);
        }
        if let Some(t) = item.protection.purge_after {
            rows.push(vec!["purged after".into(), time(t)]);
        }
        match &item.source {
            ItemSource::Files { paths, excludes } => {
                for p in paths {
                    rows.push(vec!["path".into(), p.display().to_string()]);
                }
                for e in excludes {
                    rows.push(vec!["exclude".into(), e.clone()]);
                }
            }
            ItemSource::Disk { path } => rows.push(vec!["path".into(), path.display().to_string()]),
            ItemSource::Vm { domain_xml, domain, disks, qmp, guest_agent } => {
                rows.push(vec!["domain".into(), domain.clone()]);
                rows.push(vec!["definition".into(), domain_xml.display().to_string()]);
                if let Some(socket) = qmp {
                    rows.push(vec!["qmp".into(), socket.display().to_string()]);
                }
                if let Some(socket) = guest_agent {
                    rows.push(vec!["guest agent".into(), socket.display().to_string()]);
                }
                for (dev, p) in disks {
                    rows.push(vec![format!("disk {dev}"), p.display().to_string()]);
                }
            }
        }
        rows.push(vec!["recovery points".into(), points.len().to_string()]);
        if let Some(p) = points.last() {
            rows.push(vec![
                "last backup".into(),
                format!("{} ({}, {})", time(p.time), p.id.short(), size(p.stats.bytes)),
            ]);
        }
        print_table(&["FIELD", "VALUE"], &rows);
    }
    Ok(Outcome::Ok)
}
