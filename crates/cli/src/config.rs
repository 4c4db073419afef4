//! Configuration: defaults, then a TOML file, then `ENROLL_*` environment
//! variables, then command-line flags (each overrides the one before).

use std::net::SocketAddr;
use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `sqlite://PATH` (the file is created) or `postgres://USER:PASSWORD@HOST/DB`.
    pub database_url: String,
    /// Where the HTTP server listens.
    pub listen: SocketAddr,
    /// Where patients reach this server (activation and unsubscribe links),
    /// e.g. `https://invites.example.org`. Default: `http://` + listen.
    pub public_url: Option<String>,
    /// The From of invite emails, e.g. `Riverside Portal <portal@example.org>`.
    pub email_from: String,
    pub smtp: SmtpSettings,
    pub sms: SmsSettings,
    pub delivery: DeliverySettings,
    pub mllp: MllpConfig,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            database_url: "sqlite://enroll.db".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            email_from: "Patient Portal <portal@localhost>".into(),
            smtp: SmtpSettings::default(),
            sms: SmsSettings::default(),
            delivery: DeliverySettings::default(),
            mllp: MllpConfig::default(),
        }
    }
}

impl Config {
    pub fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
    }
}

/// `[smtp]`: the mail server invites go through.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    /// `starttls` (port 587), `tls` (implicit TLS, port 465) or `plain`
    /// (only for a relay on the same machine or network).
    pub security: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub pool_size: u32,
    pub timeout_secs: u64,
}

impl Default for SmtpSettings {
    fn default() -> SmtpSettings {
        SmtpSettings {
            host: "localhost".into(),
            port: 25,
            security: "plain".into(),
            username: None,
            password: None,
            pool_size: 4,
            timeout_secs: 30,
        }
    }
}

/// `[sms]`: an HTTP SMS provider; texts are off while `account_sid` is empty.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmsSettings {
    pub base_url: Option<String>,
    pub account_sid: String,
    pub auth_token: String,
    /// The sending number, E.164.
    pub from: String,
    /// The secret part of the inbound webhook URL given to the provider:
    /// `<public_url>/webhooks/sms/<webhook_secret>`.
    pub webhook_secret: Option<String>,
}

impl SmsSettings {
    pub fn enabled(&self) -> bool {
        !self.account_sid.trim().is_empty()
    }
}

/// `[delivery]`: the dispatcher.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliverySettings {
    /// Attempts before a passing failure (server down) becomes a failure staff see.
    pub max_attempts: i64,
    /// Pause between rounds when there was nothing to send.
    pub poll_interval_ms: u64,
    /// Invites a round delivers at most (claimed 50 at a time as the sends
    /// need them; a stop claims no more). Rounds run back to back while
    /// invites are due; each boundary lets the sends run dry for a moment.
    pub batch: i64,
    /// Emails (and texts) handed to the servers at once.
    pub concurrency: usize,
}

impl Default for DeliverySettings {
    fn default() -> DeliverySettings {
        DeliverySettings {
            max_attempts: 8,
            poll_interval_ms: 1000,
            batch: 1000,
            concurrency: 16,
        }
    }
}

/// `[mllp]`: the HL7 v2 listener the EHR sends to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MllpConfig {
    pub enabled: bool,
    /// Plain MLLP. The default takes messages from this machine only; set
    /// `0.0.0.0:2575` for an interface engine elsewhere on the network.
    pub listen: SocketAddr,
    /// MLLP inside TLS, e.g. `0.0.0.0:2576`; needs `tls_cert` and `tls_key`.
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate chain and private key for `tls_listen`.
    pub tls_cert: Option<std::path::PathBuf>,
    pub tls_key: Option<std::path::PathBuf>,
    /// Larger messages are answered AR (their first 4 KiB are kept).
    pub max_message_bytes: usize,
    /// A connection silent this long is closed.
    pub idle_timeout_secs: u64,
    /// Where birth sex comes from: `obx_then_pid8` (an OBX with LOINC
    /// 76689-9, else PID-8) or `pid8`.
    pub birth_sex_source: String,
    /// The PID-3 assigning authority whose identifier is the MRN; empty: the
    /// first identifier of type MR.
    pub mrn_assigning_authority: Option<String>,
}

impl Default for MllpConfig {
    fn default() -> MllpConfig {
        MllpConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 2575)),
            tls_listen: None,
            tls_cert: None,
            tls_key: None,
            max_message_bytes: 1024 * 1024,
            idle_timeout_secs: 300,
            birth_sex_source: "obx_then_pid8".into(),
            mrn_assigning_authority: None,
        }
    }
}

/// Flags that override the file and the environment.
#[derive(Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
}

/// The keys a file or an `ENROLL_*` variable may set (`ENROLL_SMTP__HOST`
/// sets `smtp.host`). Other `ENROLL_*` variables (for example the test
/// suite's `ENROLL_TEST_POSTGRES_URL`) are not configuration and are
/// ignored rather than refused.
const KEYS: [&str; 8] = [
    "database_url",
    "listen",
    "public_url",
    "email_from",
    "smtp",
    "sms",
    "delivery",
    "mllp",
];

/// Loads the configuration, explaining a bad file or key in words.
pub fn load(file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Config> {
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    if let Some(path) = file {
        if !path.exists() {
            anyhow::bail!("config file {} does not exist", path.display());
        }
        figment = figment.merge(Toml::file(path));
    }
    let env = Env::prefixed("ENROLL_")
        .filter(|key| {
            let key = key.as_str().to_ascii_lowercase();
            KEYS.iter().any(|k| key.split("__").next() == Some(*k))
        })
        .split("__");
    figment.merge(env).merge(Serialized::defaults(overrides)).extract().map_err(|e| {
        anyhow::anyhow!(
            "configuration is not valid: {e}\n(keys: {}; environment: ENROLL_DATABASE_URL, ENROLL_SMTP__HOST, ...)",
            KEYS.join(", ")
        )
    })
}

#[cfg(test)]
// figment::Jail's closures must return figment's own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    // figment::Jail runs each test in its own folder with its own
    // environment, one at a time, so environment variables set by one test
    // never leak into another.

    #[test]
    fn file_then_flags_override_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "enroll.toml",
                "database_url = \"sqlite:///tmp/x.db\"\nlisten = \"127.0.0.1:9000\"\n",
            )?;
            let file = Path::new("enroll.toml");
            let config = load(Some(file), &Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(config.database_url, "sqlite:///tmp/x.db");
            assert_eq!(config.listen.port(), 9000);
            let flags = Overrides {
                listen: Some(SocketAddr::from(([127, 0, 0, 1], 9100))),
                ..Overrides::default()
            };
            assert_eq!(
                load(Some(file), &flags)
                    .map_err(|e| e.to_string())?
                    .listen
                    .port(),
                9100
            );
            Ok(())
        });
    }

    #[test]
    fn unknown_key_is_explained() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("enroll.toml", "databse_url = \"sqlite://x\"\n")?;
            let err = load(Some(Path::new("enroll.toml")), &Overrides::default())
                .expect_err("unknown key");
            assert!(err.to_string().contains("databse_url"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn environment_overrides_the_file_and_other_enroll_variables_are_ignored() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("enroll.toml", "database_url = \"sqlite://file.db\"")?;
            jail.set_env("ENROLL_DATABASE_URL", "postgres://u@h/db");
            jail.set_env("ENROLL_TEST_POSTGRES_URL", "postgres://elsewhere");
            let config = load(Some(Path::new("enroll.toml")), &Overrides::default())
                .map_err(|e| e.to_string())?;
            assert_eq!(config.database_url, "postgres://u@h/db");
            Ok(())
        });
    }

    #[test]
    fn sections_come_from_the_file_and_nested_environment_variables() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "enroll.toml",
                "email_from = \"Clinic <p@example.org>\"\n[smtp]\nhost = \"mail.example.org\"\nport = 587\nsecurity = \"starttls\"\n",
            )?;
            jail.set_env("ENROLL_SMTP__PASSWORD", "s3cret");
            jail.set_env("ENROLL_SMS__ACCOUNT_SID", "AC123");
            let config = load(Some(Path::new("enroll.toml")), &Overrides::default())
                .map_err(|e| e.to_string())?;
            assert_eq!(config.smtp.host, "mail.example.org");
            assert_eq!(config.smtp.port, 587);
            assert_eq!(config.smtp.password.as_deref(), Some("s3cret"));
            assert!(config.sms.enabled());
            assert_eq!(
                config.delivery.max_attempts, 8,
                "defaults fill what is not given"
            );
            assert_eq!(config.public_url(), "http://127.0.0.1:8080");
            Ok(())
        });
    }

    #[test]
    fn missing_file_is_an_error() {
        figment::Jail::expect_with(|_| {
            let err = load(
                Some(Path::new("/nonexistent/enroll.toml")),
                &Overrides::default(),
            )
            .expect_err("missing");
            assert!(err.to_string().contains("does not exist"));
            Ok(())
        });
    }
}
