//! `boveda serve` and `boveda token`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use boveda_server::{App, Scheduler, ServerConfig};
use boveda_service::{
    BackgroundEnv, KdfParams, NewToken, create_token, hostname, list_tokens, open_vault, revoke_token,
};

use super::Ctx;
use super::prune::parse_duration;
use super::signals::stop_on_signals;
use crate::Outcome;
use crate::args::{ServeArgs, TokenCmd};
use crate::output::{opt_time, print_table, time};
use crate::passphrase::passphrase;

pub fn serve(ctx: &Ctx, args: ServeArgs) -> Result<Outcome> {
    let clock = ctx.clock()?;
    let pass = passphrase(ctx.password_file.as_deref(), false)?;
    let selectors = boveda_service::vaults_to_serve(&args.agent.vaults, ctx.vault.as_deref())?;
    let vaults = selectors
        .iter()
        .map(|s| open_vault(Some(s), &pass).map(Arc::new).with_context(|| format!("vault {s}")))
        .collect::<Result<Vec<_>>>()?;
    if args.agent.max_jobs == 0 {
        anyhow::bail!("--max-jobs must be at least 1");
    }
    let stop = stop_on_signals();
    // jobs started through the API run as many at once per vault as the
    // scheduler's; the others wait, Queued
    let mut jobs = BackgroundEnv::new(clock.clone(), ctx.heartbeat(), hostname());
    jobs.slots = boveda_service::JobSlots::new(args.agent.max_jobs);
    let mut config = ServerConfig::new(pass, jobs);
    config.restore_roots = args.restore_roots;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(boveda_server::tls_config(cert, key)?),
        _ => None,
    };
    config.secure_cookies = args.secure_cookies || tls.is_some();
    if let Some(cert) = &args.tls_cert {
        config.tls_fingerprint = Some(boveda_server::certificate_fingerprint_of(cert)?);
    }
    config.public_url = args.public_url;
    config.host_quota = args.host_quota_mib << 20;
    config.host_direct = !args.host_uploads_through_server;
    config.host_silence = Duration::from_secs(args.host_silence_secs.max(1));
    if args.insecure_fast_kdf {
        config.kdf = KdfParams::TESTING;
    }
    let watch_clock = clock.clone();
    let scheduler = (!args.no_scheduler).then(|| {
        Ok::<_, anyhow::Error>(Arc::new(Scheduler {
            clock,
            max_jobs: args.agent.max_jobs,
            heartbeat: ctx.heartbeat(),
            safety_margin: parse_duration(&args.agent.safety_margin)?,
            poll: Duration::from_secs(args.agent.poll_secs.max(1)),
            stop,
        }))
    });
    let scheduler = scheduler.transpose()?;
    let mut threads = Vec::new();
    if let Some(s) = &scheduler {
        threads.extend(vaults.iter().map(|v| s.start(v.clone())));
    }
    let hook = scheduler.map(|s| {
        Box::new(move |vault: Arc<boveda_service::Vault>| {
            // runs until the server stops, like the first ones
            drop(s.start(vault));
        }) as boveda_server::VaultHook
    });
    let names: Vec<String> = vaults.iter().map(|v| v.settings().name.clone()).collect();
    eprintln!("boveda serve: serving {}", names.join(", "));
    let app = App::new(config, vaults, hook);
    threads.push(watch_hosts(app.clone(), watch_clock, stop));
    boveda_server::run(app, args.listen, tls, stop).with_context(|| format!("cannot serve on {}", args.listen))?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    Ok(Outcome::Ok)
}

/// Watches the registered hosts of every vault served, until `stop`: one
/// alert for each host that falls silent (docs/FLEET.md). Every 30 s, or
/// `BOVEDA_HOST_WATCH_MS` (for tests).
fn watch_hosts(
    app: boveda_server::AppState,
    clock: Arc<dyn boveda_service::Clock>,
    stop: &'static std::sync::atomic::AtomicBool,
) -> std::thread::JoinHandle<()> {
    let every = std::env::var("BOVEDA_HOST_WATCH_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(30), Duration::from_millis);
    std::thread::spawn(move || {
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            for served in app.served() {
                match boveda_service::fleet::watch::watch_hosts(&served.vault, clock.as_ref()) {
                    Ok(raised) => raised.iter().for_each(|r| eprintln!("boveda serve: alert: {r}")),
                    Err(e) => eprintln!("boveda serve: watching the hosts of {}: {e}", served.name()),
                }
            }
            let until = std::time::Instant::now() + every;
            while std::time::Instant::now() < until && !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100).min(every));
            }
        }
    })
}

pub fn token(ctx: &Ctx, cmd: TokenCmd) -> Result<Outcome> {
    let vault = ctx.open()?;
    let now = ctx.clock()?.now();
    match cmd {
        TokenCmd::Create { role, items, expires, description } => {
            let req = NewToken { role, items, description, expires };
            let (token, secret) = create_token(&vault, &req, now, &hostname())?;
            if ctx.json() {
                ctx.print_json(&serde_json::json!({ "token": token, "secret": secret }))?;
            } else {
                eprintln!(
                    "created token {} ({}) for vault {}; it is shown this once:",
                    token.id.short(),
                    token.role.as_str(),
                    vault.settings().name
                );
                println!("{secret}");
            }
        }
        TokenCmd::List => {
            let tokens = list_tokens(&vault)?;
            if ctx.json() {
                ctx.print_json(&tokens)?;
            } else {
                let rows: Vec<Vec<String>> = tokens
                    .iter()
                    .map(|t| {
                        let items: Vec<&str> = t.items.iter().map(|i| i.name.as_str()).collect();
                        vec![
                            t.id.short(),
                            t.role.as_str().into(),
                            if items.is_empty() { "all".into() } else { items.join(",") },
                            time(t.created),
                            opt_time(t.expires),
                            opt_time(t.revoked),
                            t.description.clone(),
                        ]
                    })
                    .collect();
                print_table(&["ID", "ROLE", "ITEMS", "CREATED", "EXPIRES", "REVOKED", "DESCRIPTION"], &rows);
            }
        }
        TokenCmd::Revoke { id } => {
            let token = revoke_token(&vault, &id, now)?;
            if ctx.json() {
                ctx.print_json(&token)?;
            } else {
                println!("revoked token {}", token.id.short());
            }
        }
    }
    Ok(Outcome::Ok)
}
