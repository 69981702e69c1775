//! `vault email`: a vault's SMTP settings for alerts by e-mail.

use anyhow::{Context, Result};
use boveda_service::{
    EmailSecurity, EmailSettings, clear_email_settings, email_settings, send_test_email, set_email_settings,
};

use super::Ctx;
use crate::Outcome;
use crate::args_email::EmailCmd;

pub fn email(ctx: &Ctx, cmd: EmailCmd) -> Result<Outcome> {
    let vault = ctx.open()?;
    match cmd {
        EmailCmd::Show => {
            let view = email_settings(&vault)?;
            if ctx.json() {
                ctx.print_json(&view)?;
            } else {
                match view {
                    Some(v) => println!(
                        "server:   {}:{} ({:?})\nuser:     {}{}\nfrom:     {}\nto:       {}",
                        v.server,
                        v.port,
                        v.security,
                        v.username.as_deref().unwrap_or("-"),
                        if v.password_set { " (password stored)" } else { "" },
                        v.from,
                        v.to.join(", ")
                    ),
                    None => println!("no e-mail: alerts are not sent by e-mail"),
                }
            }
        }
        EmailCmd::Set(a) => {
            let security = match a.security.as_str() {
                "tls" => EmailSecurity::Tls,
                "none" => EmailSecurity::None,
                _ => EmailSecurity::Starttls,
            };
            let ca_certificate = match &a.ca_file {
                Some(p) => Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?),
                None => None,
            };
            let settings = EmailSettings {
                server: a.server,
                port: a.port,
                security,
                username: a.username,
                password: std::env::var("BOVEDA_SMTP_PASSWORD").ok().filter(|p| !p.is_empty()),
                from: a.from,
                to: a.to,
                ca_certificate,
            };
            let view = set_email_settings(&vault, settings)?;
            println!("alerts are sent by e-mail to {} via {}:{}", view.to.join(", "), view.server, view.port);
        }
        EmailCmd::Test => {
            let to = send_test_email(&vault)?;
            println!("test message sent to {}", to.join(", "));
        }
        EmailCmd::Off => {
            clear_email_settings(&vault)?;
            println!("alerts are no longer sent by e-mail");
        }
    }
    Ok(Outcome::Ok)
}
