//! Alerts by e-mail: a vault's SMTP settings (kept in its control record,
//! sealed like every record, so the password is stored encrypted) and one
//! message per alert saying what happened and what to do.
//!
//! The connection is STARTTLS or TLS from the start, the server's
//! certificate checked against the public roots or a private CA given with
//! the settings; a connection without TLS is allowed only to this machine
//! (a local relay), so that neither the password nor an alert crosses a
//! network in the clear. A message that cannot be sent is recorded on the
//! alert and sent again with the webhook's retries.

use std::time::Duration;

use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};
use serde::{Deserialize, Serialize};

use crate::error::{Result, ServiceError};

const SEND_TIMEOUT: Duration = Duration::from_secs(15);

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EmailSecurity {
    /// Plain at first, then TLS before anything else is said (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No TLS: only to a relay on this machine.
    None,
}

/// A vault's SMTP settings (their `Debug` never shows the password).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailSettings {
    pub server: String,
    pub port: u16,
    #[serde(default)]
    pub security: EmailSecurity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    pub from: String,
    pub to: Vec<String>,
    /// A private CA's certificate (PEM) the server's certificate may chain
    /// to, besides the public roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificate: Option<String>,
}

impl std::fmt::Debug for EmailSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailSettings")
            .field("server", &self.server)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "(set)"))
            .field("from", &self.from)
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

/// The settings as a client sees them: the password never leaves.
#[derive(Debug, Clone, Serialize)]
pub struct EmailView {
    pub server: String,
    pub port: u16,
    pub security: EmailSecurity,
    pub username: Option<String>,
    pub password_set: bool,
    pub from: String,
    pub to: Vec<String>,
    pub ca_certificate: Option<String>,
}

impl From<&EmailSettings> for EmailView {
    fn from(s: &EmailSettings) -> Self {
        EmailView {
            server: s.server.clone(),
            port: s.port,
            security: s.security,
            username: s.username.clone(),
            password_set: s.password.is_some(),
            from: s.from.clone(),
            to: s.to.clone(),
            ca_certificate: s.ca_certificate.clone(),
        }
    }
}

fn field(name: &'static str, why: impl std::fmt::Display) -> ServiceError {
    ServiceError::field_error(name, why)
}

fn mailbox(name: &'static str, s: &str) -> Result<Mailbox> {
    s.parse().map_err(|e| field(name, format!("{s:?} is not an e-mail address ({e})")))
}

/// Whether `server` names this machine.
fn is_loopback(server: &str) -> bool {
    let bare = server.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost") || bare.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl EmailSettings {
    /// Checks every field, naming the first at fault.
    ///
    /// # Errors
    /// `Invalid` with the field.
    pub fn validate(&self) -> Result<()> {
        let host_ok = !self.server.is_empty()
            && self.server.len() <= 253
            && self.server.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
        if !host_ok {
            return Err(field("server", format!("{:?} is not a host name or address", self.server)));
        }
        if self.port == 0 {
            return Err(field("port", "a port is 1 to 65535"));
        }
        if self.security == EmailSecurity::None && !is_loopback(&self.server) {
            return Err(field(
                "security",
                "without TLS, alerts and the password would cross the network in the clear: use STARTTLS or TLS, or a relay on this machine",
            ));
        }
        let plain = |name: &'static str, v: &str| {
            if v.chars().any(char::is_control) { Err(field(name, "holds a control character")) } else { Ok(()) }
        };
        if let Some(u) = &self.username {
            plain("username", u)?;
        }
        plain("from", &self.from)?;
        for t in &self.to {
            plain("to", t)?;
        }
        if self.password.is_some() && self.username.is_none() {
            return Err(field("username", "a password needs the user name it belongs to"));
        }
        mailbox("from", &self.from)?;
        if self.to.is_empty() {
            return Err(field("to", "give at least one recipient"));
        }
        for t in &self.to {
            mailbox("to", t)?;
        }
        if let Some(pem) = &self.ca_certificate {
            Certificate::from_pem(pem.as_bytes())
                .map_err(|e| field("ca_certificate", format!("not a PEM certificate: {e}")))?;
        }
        Ok(())
    }

    fn transport(&self) -> std::result::Result<SmtpTransport, String> {
        let params = || -> std::result::Result<TlsParameters, String> {
            let mut b = TlsParameters::builder(self.server.clone());
            if let Some(pem) = &self.ca_certificate {
                b = b.add_root_certificate(Certificate::from_pem(pem.as_bytes()).map_err(|e| e.to_string())?);
            }
            b.build_rustls().map_err(|e| e.to_string())
        };
        let tls = match self.security {
            EmailSecurity::Starttls => Tls::Required(params()?),
            EmailSecurity::Tls => Tls::Wrapper(params()?),
            EmailSecurity::None => Tls::None,
        };
        let mut t = SmtpTransport::builder_dangerous(&self.server).port(self.port).tls(tls).timeout(Some(SEND_TIMEOUT));
        if let Some(user) = &self.username {
            t = t.credentials(Credentials::new(user.clone(), self.password.clone().unwrap_or_default()));
        }
        Ok(t.build())
    }

    /// Sends one message to every recipient.
    ///
    /// # Errors
    /// What the server or the connection said, in one line.
    pub fn send(&self, subject: &str, body: &str) -> std::result::Result<(), String> {
        let from: Mailbox = self.from.parse().map_err(|e| format!("from: {e}"))?;
        let mut m = Message::builder().from(from).subject(subject);
        for t in &self.to {
            m = m.to(t.parse().map_err(|e| format!("to {t}: {e}"))?);
        }
        let message = m.body(body.to_string()).map_err(|e| e.to_string())?;
        let transport = self.transport()?;
        transport.send(&message).map(|_| ()).map_err(|e| format!("e-mail via {}:{}: {e}", self.server, self.port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> EmailSettings {
        EmailSettings {
            server: "smtp.example.com".into(),
            port: 587,
            security: EmailSecurity::Starttls,
            username: Some("boveda".into()),
            password: Some("hunter2-secret".into()),
            from: "boveda@example.com".into(),
            to: vec!["ops@example.com".into()],
            ca_certificate: None,
        }
    }

    #[test]
    fn the_password_is_never_shown() {
        let s = settings();
        assert!(!format!("{s:?}").contains("hunter2"));
        let view = serde_json::to_string(&EmailView::from(&s)).expect("json");
        assert!(!view.contains("hunter2") && view.contains("\"password_set\":true"), "{view}");
    }

    #[test]
    fn clear_text_is_only_for_this_machine_and_fields_are_named() {
        let mut s = settings();
        s.security = EmailSecurity::None;
        let err = s.validate().expect_err("clear text elsewhere");
        assert_eq!(err.field(), Some("security"));
        for local in ["127.0.0.1", "localhost", "::1", "[::1]"] {
            s.server = local.into();
            s.validate().expect(local);
        }
        let mut s = settings();
        s.to = vec!["not an address".into()];
        assert_eq!(s.validate().expect_err("bad to").field(), Some("to"));
        s.to.clear();
        assert_eq!(s.validate().expect_err("no one").field(), Some("to"));
        let mut s = settings();
        s.server = "smtp.example.com\r\nRCPT TO:<x@evil>".into();
        assert_eq!(s.validate().expect_err("injection").field(), Some("server"));
    }
}
