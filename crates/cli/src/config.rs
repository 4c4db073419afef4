//! Reading the configuration (`enroll_server::Settings`): defaults, then a
//! TOML file, then `ENROLL_*` environment variables, then command-line
//! flags (each overrides the one before).

use std::net::SocketAddr;
use std::path::Path;

use enroll_server::Settings;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::Serialize;

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
/// Every field of `enroll_server::Settings` (the test
/// `every_section_can_be_set_from_the_environment` sets one of each).
const KEYS: [&str; 13] = [
    "database_url",
    "sqlite",
    "listen",
    "http",
    "public_url",
    "email_from",
    "smtp",
    "sms",
    "delivery",
    "webhooks",
    "mllp",
    "staff_ui",
    "activation",
];

/// Loads the configuration, explaining a bad file or key in words.
pub fn load(file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Settings> {
    // Every section of `Settings` has serde defaults: what no source sets
    // takes its default.
    let mut figment = Figment::new();
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
    use enroll_notify::ExposeSecret;

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
            assert_eq!(config.database_url.expose(), "sqlite:///tmp/x.db");
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
            assert_eq!(config.database_url.expose(), "postgres://u@h/db");
            Ok(())
        });
    }

    /// The sections added after the first ones were not read from the
    /// environment until they were listed in `KEYS`.
    #[test]
    fn every_section_can_be_set_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("ENROLL_WEBHOOKS__MAX_ATTEMPTS", "3");
            jail.set_env("ENROLL_STAFF_UI__IDLE_TIMEOUT_MINUTES", "7");
            jail.set_env("ENROLL_ACTIVATION__LINK_LIFETIME_DAYS", "9");
            jail.set_env("ENROLL_DELIVERY__MAX_ATTEMPTS", "5");
            jail.set_env("ENROLL_MLLP__MAX_CONNECTIONS", "11");
            let config = load(None, &Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(config.webhooks.max_attempts, 3);
            assert_eq!(config.staff_ui.idle_timeout_minutes, 7);
            assert_eq!(config.activation.link_lifetime_days, 9);
            assert_eq!(config.delivery.max_attempts, 5);
            assert_eq!(config.mllp.max_connections, 11);
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
            assert_eq!(
                config.smtp.password.as_ref().map(|p| p.expose_secret()),
                Some("s3cret")
            );
            assert!(config.sms.enabled());
            assert_eq!(
                config.delivery.max_attempts, 8,
                "defaults fill what is not given"
            );
            assert_eq!(config.public_url, None);
            assert_eq!(config.smtp.security, enroll_notify::SmtpSecurity::StartTls);
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
