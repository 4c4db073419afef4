//! The configuration of a whole Enroll, each component's part declared once:
//! `[smtp]` and `[sms]` are enroll-notify's own types, `[delivery]` the
//! dispatcher's, `[webhooks]` the webhook sender's, `[http]` the HTTP
//! listeners', `[mllp]` the MLLP listener's, `[sqlite]` the store's. `enroll` reads it from a file, the
//! environment and flags (crates/cli/src/config.rs); tests and the
//! benchmarks build it in code. Every section has defaults, so an empty
//! file is a valid configuration. Secrets are `SecretString`s (the database
//! URL's password included), so `Debug` never prints them.

use std::fmt;
use std::net::SocketAddr;

use enroll_notify::{ExposeSecret, SecretString, SmsConfig, SmtpConfig};
use enroll_store::Synchronous;
use serde::Deserialize;
use url::Url;

use crate::activation::ActivationConfig;
use crate::dispatcher::DeliveryConfig;
use crate::http::HttpConfig;
use crate::mllp::MllpConfig;
use crate::webhooks::WebhookConfig;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// `sqlite://PATH` (the file is created) or `postgres://USER:PASSWORD@HOST/DB`.
    pub database_url: DatabaseUrl,
    /// `[sqlite]`: how SQLite makes commits durable (ignored on PostgreSQL).
    pub sqlite: SqliteConfig,
    /// Where the HTTP server listens (port 0 picks a free one): staff
    /// pages, the JSON API and the patient pages. `[http]` has its limits,
    /// TLS and the patient-only listener.
    pub listen: SocketAddr,
    pub http: HttpConfig,
    /// Where patients reach this server (activation and unsubscribe links),
    /// e.g. `https://invites.example.org`. Default: `http://` + the address
    /// the server listens on.
    pub public_url: Option<Url>,
    /// The From of invite emails, e.g. `Riverside Portal <portal@example.org>`.
    pub email_from: String,
    pub smtp: SmtpConfig,
    pub sms: SmsConfig,
    pub delivery: DeliveryConfig,
    pub webhooks: WebhookConfig,
    pub mllp: MllpConfig,
    pub staff_ui: crate::ui::session::StaffUiConfig,
    pub activation: ActivationConfig,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            database_url: DatabaseUrl::from("sqlite://enroll.db"),
            sqlite: SqliteConfig::default(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            http: HttpConfig::default(),
            public_url: None,
            email_from: "Patient Portal <portal@localhost>".into(),
            smtp: SmtpConfig::default(),
            sms: SmsConfig::default(),
            delivery: DeliveryConfig::default(),
            webhooks: WebhookConfig::default(),
            mllp: MllpConfig::default(),
            staff_ui: crate::ui::session::StaffUiConfig::default(),
            activation: ActivationConfig::default(),
        }
    }
}

/// `[sqlite]`. `synchronous = "full"` (the default) fsyncs every commit, so
/// an ACK, a 201 or a recorded send survives a power loss; `"normal"`
/// survives a crash of Enroll but not of the machine (see
/// `enroll_store::Synchronous`). `enroll demo` chooses `normal`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct SqliteConfig {
    pub synchronous: Synchronous,
}

/// A database URL, which may carry a password: shown only as
/// [`DatabaseUrl::redacted`].
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(SecretString);

impl DatabaseUrl {
    /// The URL itself, for connecting; never for a message or a log.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// The URL with its password replaced by `***`, for messages.
    pub fn redacted(&self) -> String {
        match Url::parse(self.expose()) {
            Ok(mut url) => {
                if url.password().is_some() {
                    // Only a URL that cannot have a password refuses one.
                    let _ = url.set_password(Some("***"));
                }
                url.to_string()
            }
            Err(_) => "(a database URL that cannot be read)".into(),
        }
    }

    /// What to check when the database cannot be opened.
    pub fn hint(&self) -> &'static str {
        let url = self.expose();
        if url.starts_with("sqlite:") {
            "check that the folder of the SQLite file exists and that this user may write to it"
        } else if url.starts_with("postgres") {
            "check that PostgreSQL is running at that host and port, and the user, password and database name"
        } else {
            "set database_url to sqlite://PATH or postgres://USER:PASSWORD@HOST/DB"
        }
    }
}

impl From<&str> for DatabaseUrl {
    fn from(url: &str) -> DatabaseUrl {
        DatabaseUrl(SecretString::from(url))
    }
}

impl From<String> for DatabaseUrl {
    fn from(url: String) -> DatabaseUrl {
        DatabaseUrl(SecretString::from(url))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_database_urls() {
        let url = DatabaseUrl::from("postgres://enroll:secret@db/enroll");
        assert_eq!(url.redacted(), "postgres://enroll:***@db/enroll");
        assert!(!format!("{url:?}").contains("secret"));
        assert_eq!(
            DatabaseUrl::from("sqlite://enroll.db").redacted(),
            "sqlite://enroll.db"
        );
        assert_eq!(
            DatabaseUrl::from("sqlite:///var/lib/enroll/enroll.db?mode=rwc").redacted(),
            "sqlite:///var/lib/enroll/enroll.db?mode=rwc"
        );
        assert!(
            !DatabaseUrl::from("postgres://u:p@ss@h")
                .redacted()
                .contains("p@ss")
        );
    }

    #[test]
    fn debug_shows_no_secret() {
        let settings: Settings = serde_json::from_str(
            r#"{"database_url": "postgres://u:dbpass@h/d",
                "smtp": {"username": "u", "password": "smtppass"},
                "sms": {"account_sid": "AC1", "auth_token": "smstoken", "webhook_secret": "hookpass"}}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let shown = format!("{settings:?}");
        for secret in ["dbpass", "smtppass", "smstoken", "hookpass"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(settings.sms.enabled());
    }

    #[test]
    fn the_http_section_reads_seconds_addresses_and_refuses_unknown_keys() {
        let settings: Settings = serde_json::from_str(
            r#"{"http": {"header_read_timeout_secs": 5, "request_timeout_secs": 0,
                "max_connections": 64, "patient_listen": "0.0.0.0:8443",
                "tls_cert": "/etc/enroll/http.crt", "tls_key": "/etc/enroll/http.key"}}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(settings.http.header_read_timeout.as_secs(), 5);
        assert_eq!(
            settings.http.request_timeout.as_secs(),
            1,
            "at least a second"
        );
        assert_eq!(settings.http.max_connections, 64);
        assert_eq!(settings.http.patient_listen.map(|a| a.port()), Some(8443));
        assert!(settings.http.tls().is_err(), "no such PEM files here");
        let unknown = serde_json::from_str::<Settings>(r#"{"http": {"timeout": 5}}"#);
        assert!(unknown.is_err());
        let half = serde_json::from_str::<Settings>(r#"{"http": {"tls_cert": "/x.pem"}}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(half.http.tls().is_err_and(|e| e.contains("both")));
    }

    #[test]
    fn an_empty_configuration_takes_every_default() {
        let settings: Settings = serde_json::from_str("{}").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(settings.smtp.port, 587);
        assert_eq!(settings.delivery.batch, 1000);
        assert!(settings.webhooks.enabled);
        assert_eq!(settings.webhooks.max_attempts, 12);
        assert!(settings.mllp.enabled);
        assert_eq!(settings.http.max_connections, 512);
        assert!(settings.http.patient_listen.is_none() && settings.http.tls_cert.is_none());
        assert!(!settings.sms.enabled());
        assert_eq!(settings.activation.link_lifetime_days, 30);
        assert_eq!(settings.activation.max_identity_failures, 5);
    }
}
