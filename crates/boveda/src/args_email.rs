//! `boveda vault email`: alerts by e-mail (docs/OPERATIONS.md).

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum EmailCmd {
    /// Show the vault's SMTP settings (never the password).
    Show,
    /// Send alerts by e-mail, one message per alert. The password comes from
    /// BOVEDA_SMTP_PASSWORD (never the command line); left unset, the one
    /// stored for the same server and user is kept.
    Set(EmailArgs),
    /// Send a test message with the settings stored.
    Test,
    /// Stop sending e-mails.
    Off,
}

#[derive(Args)]
pub struct EmailArgs {
    /// The SMTP server's host name or address.
    #[arg(long)]
    pub server: String,
    /// Its port (587 for STARTTLS, 465 for TLS).
    #[arg(long, default_value_t = 587)]
    pub port: u16,
    /// starttls, tls, or none (only to a relay on this machine).
    #[arg(long, default_value = "starttls", value_parser = ["starttls", "tls", "none"])]
    pub security: String,
    /// The user to log in as (none: no login).
    #[arg(long)]
    pub username: Option<String>,
    /// The sender's address.
    #[arg(long)]
    pub from: String,
    /// A recipient (repeatable).
    #[arg(long = "to", required = true)]
    pub to: Vec<String>,
    /// A private CA's certificate (PEM) the server's may chain to.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
}
