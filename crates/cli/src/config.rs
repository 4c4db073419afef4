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
}

impl Default for Config {
    fn default() -> Config {
        Config {
            database_url: "sqlite://enroll.db".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
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

/// The keys a file or an `ENROLL_*` variable may set. Other `ENROLL_*`
/// variables (for example the test suite's `ENROLL_TEST_POSTGRES_URL`) are
/// not configuration and are ignored rather than refused.
const KEYS: [&str; 2] = ["database_url", "listen"];

/// Loads the configuration, explaining a bad file or key in words.
pub fn load(file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Config> {
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    if let Some(path) = file {
        if !path.exists() {
            anyhow::bail!("config file {} does not exist", path.display());
        }
        figment = figment.merge(Toml::file(path));
    }
    figment
        .merge(Env::prefixed("ENROLL_").only(&KEYS))
        .merge(Serialized::defaults(overrides))
        .extract()
        .map_err(|e| anyhow::anyhow!("configuration is not valid: {e}\n(keys: database_url, listen; environment: ENROLL_DATABASE_URL, ENROLL_LISTEN)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    // figment::Jail runs each test in its own folder with its own
    // environment, one at a time, so environment variables set by one test
    // never leak into another.

    #[test]
    fn file_then_flags_override_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("enroll.toml", "database_url = \"sqlite:///tmp/x.db\"\nlisten = \"127.0.0.1:9000\"\n")?;
            let file = Path::new("enroll.toml");
            let config = load(Some(file), &Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(config.database_url, "sqlite:///tmp/x.db");
            assert_eq!(config.listen.port(), 9000);
            let flags = Overrides { listen: Some(SocketAddr::from(([127, 0, 0, 1], 9100))), ..Overrides::default() };
            assert_eq!(load(Some(file), &flags).map_err(|e| e.to_string())?.listen.port(), 9100);
            Ok(())
        });
    }

    #[test]
    fn unknown_key_is_explained() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("enroll.toml", "databse_url = \"sqlite://x\"\n")?;
            let err = load(Some(Path::new("enroll.toml")), &Overrides::default()).expect_err("unknown key");
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
    fn missing_file_is_an_error() {
        figment::Jail::expect_with(|_| {
            let err = load(Some(Path::new("/nonexistent/enroll.toml")), &Overrides::default())
                .expect_err("missing");
            assert!(err.to_string().contains("does not exist"));
            Ok(())
        });
    }
}
