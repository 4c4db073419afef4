//! Invite emails over SMTP with lettre: pooled connections with
//! `TCP_NODELAY` (see [`SmtpMailer`] and `smtp.rs`), a
//! multipart/alternative message with a stable Message-ID and RFC 8058
//! one-click unsubscribe headers, and the transient/permanent split of failures.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use rustls::pki_types::{CertificateDer, ServerName};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use crate::message::build_message;
use crate::smtp::{Connector, Pool, Security};
use crate::smtp_error::classify;
use crate::{DeliveryError, EmailSender, OutgoingEmail, tls};

/// How the connection to the SMTP server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// No TLS at all: only for a relay on the same host or a test server.
    #[serde(alias = "none")]
    Plain,
    /// Plain connect, then STARTTLS, which is required (usually port 587).
    #[default]
    #[serde(alias = "start_tls", alias = "start-tls")]
    StartTls,
    /// TLS from the first byte ("SMTPS", usually port 465).
    #[serde(alias = "ssl", alias = "implicit")]
    Tls,
}

impl fmt::Display for SmtpSecurity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SmtpSecurity::Plain => "plain",
            SmtpSecurity::StartTls => "starttls",
            SmtpSecurity::Tls => "tls",
        })
    }
}

/// Where and how to send email (`[smtp]` in the configuration). Every field
/// has a default (`localhost:587`, STARTTLS, no credentials, 4 pooled
/// connections, 30 s timeout); `Debug` does not show the password.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    pub pool_size: u32,
    pub timeout_secs: u64,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            host: "localhost".to_owned(),
            port: 587,
            security: SmtpSecurity::StartTls,
            username: None,
            password: None,
            pool_size: 4,
            timeout_secs: 30,
        }
    }
}

/// Sends invite emails through one SMTP server over a small pool of
/// connections it opens itself.
///
/// Why not lettre's `AsyncSmtpTransport` and its pool: lettre 0.11 never
/// sets `TCP_NODELAY` and writes the message body and the final `.` line in
/// two writes, so Nagle's algorithm holds the 5-byte `.` line until the
/// server acknowledges the body, and servers delay that acknowledgement
/// (about 40 ms on Linux). Every message then cost about 40 ms per pooled
/// connection whatever the server: the delivery benchmark measured the
/// lettre transport at about 360 messages/s against an in-process SMTP
/// sink, and the same lettre client on sockets with `TCP_NODELAY` at about
/// 6,800/s. So this mailer connects the TCP socket itself (with the
/// timeout, `TCP_NODELAY` set), wraps it in TLS for implicit TLS, and hands
/// it to lettre's [`AsyncSmtpConnection`](lettre::transport::smtp::client::AsyncSmtpConnection),
/// which still does the SMTP: EHLO, STARTTLS (required when configured),
/// AUTH PLAIN/LOGIN, the envelope and the dot-stuffed message. The pool is
/// its own too (lettre's cannot take such connections): at most
/// `pool_size` connections, each used by one send at a time; an idle one is
/// reused only if the server has not closed it (checked without a round
/// trip), and closed after 60 s of idleness.
///
/// Create it inside a Tokio runtime (a task closes idle connections) and
/// drop it there too. Share it with an `Arc`.
pub struct SmtpMailer {
    config: SmtpConfig,
    connector: Connector,
    pool: Arc<Pool>,
    timeout: Duration,
}

impl fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpMailer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl SmtpConfig {
    /// True when the server is this machine (`localhost`, 127.0.0.0/8,
    /// `::1`): what is sent to it in clear does not cross a network.
    pub fn is_loopback(&self) -> bool {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// Credentials over a connection without TLS to another machine: the
    /// mailer refuses to be built so, rather than warn and send.
    pub fn sends_password_in_clear(&self) -> bool {
        self.security == SmtpSecurity::Plain && self.username.is_some() && !self.is_loopback()
    }

    /// No TLS to another machine: invites (first name, activation link)
    /// cross the network in clear. `enroll doctor` warns of it.
    pub fn is_plain_over_network(&self) -> bool {
        self.security == SmtpSecurity::Plain && !self.is_loopback()
    }
}

fn config_error(what: impl fmt::Display) -> DeliveryError {
    DeliveryError::Permanent(format!("invalid SMTP configuration: {what}"))
}

/// Checks the configuration and prepares the TLS settings; connects nothing.
/// `extra_roots` are trusted besides the system's (tests only).
fn build_connector(
    config: &SmtpConfig,
    extra_roots: Vec<CertificateDer<'static>>,
) -> Result<Connector, DeliveryError> {
    let host = config.host.trim();
    if host.is_empty() {
        return Err(config_error("the host is empty"));
    }
    if config.port == 0 {
        return Err(config_error("the port is 0"));
    }
    let security = match config.security {
        SmtpSecurity::Plain => Security::Plain,
        // lettre's own rustls settings, as its `starttls_relay` built them
        // (the platform verifier, TLS 1.2+, ring unless the process
        // installed another default provider): lettre's STARTTLS takes only
        // these, not a rustls `ClientConfig`.
        SmtpSecurity::StartTls => {
            let mut builder = TlsParameters::builder(host.to_owned());
            for root in extra_roots {
                let certificate = Certificate::from_der(root.to_vec())
                    .map_err(|err| config_error(format_args!("a trusted certificate: {err}")))?;
                builder = builder.add_root_certificate(certificate);
            }
            let parameters = builder
                .build_rustls()
                .map_err(|err| config_error(format_args!("STARTTLS setup for {host}: {err}")))?;
            Security::StartTls(parameters)
        }
        // The crate's TLS settings (tls.rs: ring, the platform verifier),
        // the same in substance, for tokio-rustls.
        SmtpSecurity::Tls => {
            let tls = tls::client_config_with_roots(extra_roots)
                .map_err(|err| config_error(format_args!("TLS setup for {host}: {err}")))?;
            let server_name = ServerName::try_from(host.to_owned())
                .map_err(|_| config_error(format_args!("{host} is not a valid TLS server name")))?;
            Security::Tls {
                connector: TlsConnector::from(Arc::new(tls)),
                server_name,
            }
        }
    };
    let credentials = match (&config.username, &config.password) {
        (Some(user), Some(password)) => Some(Credentials::new(
            user.clone(),
            password.expose_secret().to_owned(),
        )),
        (None, None) => None,
        (Some(_), None) => return Err(config_error("a username is set without a password")),
        (None, Some(_)) => return Err(config_error("a password is set without a username")),
    };
    let timeout = Duration::from_secs(config.timeout_secs.max(1));
    Ok(Connector {
        host: host.to_owned(),
        port: config.port,
        security,
        credentials,
        // What lettre's transport sent: this machine's host name.
        hello: ClientId::default(),
        connect_timeout: timeout,
    })
}

impl SmtpMailer {
    /// Checks the configuration; connects lazily on the first send or
    /// [`SmtpMailer::check`]. `timeout_secs` bounds the connect and also each
    /// whole operation (a send or a check, including the wait for a free
    /// connection).
    pub fn new(config: &SmtpConfig) -> Result<SmtpMailer, DeliveryError> {
        Self::with_extra_roots(config, Vec::new())
    }

    fn with_extra_roots(
        config: &SmtpConfig,
        extra_roots: Vec<CertificateDer<'static>>,
    ) -> Result<SmtpMailer, DeliveryError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(config_error(
                "the SMTP mailer must be created inside a Tokio runtime",
            ));
        }
        if config.sends_password_in_clear() {
            return Err(config_error(format!(
                "a user name and password are set for {} with security = \"plain\": the \
                 password would cross the network in clear. Use security = \"starttls\" \
                 (port 587) or \"tls\" (port 465), or a relay on this machine",
                config.host
            )));
        }
        let connector = build_connector(config, extra_roots)?;
        let pool = Pool::new(usize::try_from(config.pool_size).unwrap_or(usize::MAX));
        Pool::spawn_reaper(&pool);
        Ok(SmtpMailer {
            config: config.clone(),
            connector,
            pool,
            timeout: Duration::from_secs(config.timeout_secs.max(1)),
        })
    }

    fn timed_out(&self) -> DeliveryError {
        DeliveryError::Transient(format!(
            "the SMTP server did not finish within {} s",
            self.timeout.as_secs()
        ))
    }

    /// Waits until `deadline` for one of the `pool_size` connections.
    async fn slot(&self, deadline: Instant) -> Result<OwnedSemaphorePermit, DeliveryError> {
        match tokio::time::timeout_at(deadline, self.pool.slot()).await {
            Ok(Some(slot)) => Ok(slot),
            Ok(None) => Err(DeliveryError::Transient(
                "the SMTP mailer is shut down".to_owned(),
            )),
            Err(_elapsed) => Err(DeliveryError::Transient(format!(
                "all {} SMTP connections stayed busy for {} s",
                self.config.pool_size.max(1),
                self.timeout.as_secs()
            ))),
        }
    }

    /// Connects, greets, secures and logs in, then NOOP and QUIT on a fresh
    /// connection: the `enroll doctor` check.
    pub async fn check(&self) -> Result<(), DeliveryError> {
        let deadline = Instant::now() + self.timeout;
        let _slot = self.slot(deadline).await?;
        let checked = tokio::time::timeout_at(deadline, async {
            let mut connection = self.connector.connect().await?;
            if !connection.smtp.test_connected().await {
                return Err(DeliveryError::Transient(
                    "the SMTP server did not answer the connection test".to_owned(),
                ));
            }
            let _ = connection.smtp.quit().await;
            Ok(())
        })
        .await;
        // On timeout the connection was dropped mid-conversation, never kept.
        checked.unwrap_or_else(|_elapsed| Err(self.timed_out()))
    }
}

#[async_trait::async_trait]
impl EmailSender for SmtpMailer {
    async fn send_email(&self, email: &OutgoingEmail) -> Result<(), DeliveryError> {
        let message = build_message(email)?;
        let body = message.formatted();
        let deadline = Instant::now() + self.timeout;
        // Held until the connection is back in the pool (dropped last).
        let _slot = self.slot(deadline).await?;
        let sent = tokio::time::timeout_at(deadline, async {
            let mut connection = match self.pool.take_idle() {
                Some(connection) => connection,
                None => self.connector.connect().await?,
            };
            let result = connection.smtp.send(message.envelope(), &body).await;
            self.pool.give_back(connection);
            result.map(|_| ()).map_err(|err| classify(&err))
        })
        .await;
        // A timed-out send dropped its connection mid-conversation: reusing
        // it could mix up replies, so it is never given back.
        let result = sent.unwrap_or_else(|_elapsed| Err(self.timed_out()));
        if let Err(err) = &result {
            tracing::debug!(message_id = %email.message_id, error = %err, "SMTP delivery failed");
        }
        result
    }
}

#[cfg(test)]
mod tests {

    #[tokio::test]
    async fn credentials_are_never_sent_in_clear_to_another_machine() {
        let plain = |host: &str, user: Option<&str>| SmtpConfig {
            host: host.into(),
            port: 25,
            security: SmtpSecurity::Plain,
            username: user.map(str::to_string),
            password: user.map(|_| SecretString::from("pw")),
            ..SmtpConfig::default()
        };
        let refused = SmtpMailer::new(&plain("mail.example.org", Some("clinic")))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            refused.contains("would cross the network in clear"),
            "{refused}"
        );
        assert!(SmtpMailer::new(&plain("127.0.0.1", Some("clinic"))).is_ok());
        assert!(SmtpMailer::new(&plain("localhost", Some("clinic"))).is_ok());
        assert!(SmtpMailer::new(&plain("[::1]", Some("clinic"))).is_ok());
        assert!(SmtpMailer::new(&plain("mail.example.org", None)).is_ok());
        assert!(plain("mail.example.org", None).is_plain_over_network());
        assert!(!plain("127.0.0.1", None).is_plain_over_network());
        let tls = SmtpConfig {
            security: SmtpSecurity::StartTls,
            ..plain("mail.example.org", Some("clinic"))
        };
        assert!(!tls.is_plain_over_network() && !tls.sends_password_in_clear());
    }

    use super::*;

    #[test]
    fn config_defaults_and_debug() {
        let config = SmtpConfig::default();
        assert_eq!(config.host, "localhost");
        assert_eq!(config.port, 587);
        assert_eq!(config.security, SmtpSecurity::StartTls);
        let with_password = SmtpConfig {
            username: Some("user".to_owned()),
            password: Some("hunter2".into()),
            ..SmtpConfig::default()
        };
        assert!(!format!("{with_password:?}").contains("hunter2"));
    }

    #[test]
    fn config_deserialises_with_defaults() {
        let config: SmtpConfig =
            serde_json::from_str(r#"{"host": "smtp.example.org", "security": "tls", "port": 465}"#)
                .unwrap();
        assert_eq!(config.security, SmtpSecurity::Tls);
        assert_eq!(config.port, 465);
        assert_eq!(config.pool_size, 4);
        for (text, security) in [
            ("plain", SmtpSecurity::Plain),
            ("starttls", SmtpSecurity::StartTls),
            ("start_tls", SmtpSecurity::StartTls),
            ("tls", SmtpSecurity::Tls),
            ("none", SmtpSecurity::Plain),
            ("ssl", SmtpSecurity::Tls),
            ("implicit", SmtpSecurity::Tls),
        ] {
            let config: SmtpConfig =
                serde_json::from_str(&format!(r#"{{"security": "{text}"}}"#)).unwrap();
            assert_eq!(config.security, security);
        }
        let unknown = serde_json::from_str::<SmtpConfig>(r#"{"hots": "x"}"#).unwrap_err();
        assert!(unknown.to_string().contains("hots"), "{unknown}");
    }

    #[test]
    fn new_outside_a_runtime_is_an_error_not_a_panic() {
        let err = SmtpMailer::new(&SmtpConfig::default()).unwrap_err();
        assert!(err.is_permanent());
    }

    #[tokio::test]
    async fn half_credentials_are_rejected() {
        let config = SmtpConfig {
            username: Some("user".to_owned()),
            ..SmtpConfig::default()
        };
        assert!(SmtpMailer::new(&config).unwrap_err().is_permanent());
        for security in [
            SmtpSecurity::Plain,
            SmtpSecurity::StartTls,
            SmtpSecurity::Tls,
        ] {
            let config = SmtpConfig {
                security,
                ..SmtpConfig::default()
            };
            SmtpMailer::new(&config).unwrap();
        }
    }
}

/// TLS against the sink (`testing`), trusting its test CA through the
/// crate-private `with_extra_roots`: no public API trusts that CA.
#[cfg(all(test, feature = "testing"))]
#[allow(clippy::unwrap_used)] // tests (clippy counts only a plain cfg(test) as one)
mod tls_tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::RenderedEmail;
    use crate::testing::{SmtpSink, SmtpSinkState, test_ca};

    fn email(to: &str) -> OutgoingEmail {
        OutgoingEmail {
            to: crate::EmailAddress::parse(to).unwrap(),
            from: "Main Street Clinic <invites@clinic.example>".to_owned(),
            message_id: "invite-7@enroll.example".to_owned(),
            list_unsubscribe: "https://enroll.example/unsubscribe/7/abcdef".to_owned(),
            content: RenderedEmail {
                subject: "Your invitation".to_owned(),
                text: "Hi Maria".to_owned(),
                html: "<p>Hi Maria</p>".to_owned(),
            },
        }
    }

    fn config(sink: &SmtpSink, security: SmtpSecurity, host: &str) -> SmtpConfig {
        SmtpConfig {
            host: host.to_owned(),
            port: sink.addr.port(),
            security,
            username: Some("enroll".to_owned()),
            password: Some("right-password".into()),
            pool_size: 2,
            timeout_secs: 5,
        }
    }

    async fn sink(implicit_tls: bool) -> SmtpSink {
        let state = Arc::new(SmtpSinkState::default());
        state.require_login("enroll", "right-password");
        let addr = "127.0.0.1:0".parse().unwrap();
        if implicit_tls {
            SmtpSink::start_tls_on(addr, state).await
        } else {
            state.starttls.store(true, Ordering::Relaxed);
            SmtpSink::start_on(addr, state).await
        }
    }

    /// Checks, then three sends over one pooled TLS connection.
    async fn delivers(sink: &SmtpSink, config: &SmtpConfig) {
        let mailer = SmtpMailer::with_extra_roots(config, vec![test_ca()]).unwrap();
        mailer.check().await.unwrap();
        for to in [
            "a@patients.example",
            "b@patients.example",
            "c@patients.example",
        ] {
            mailer.send_email(&email(to)).await.unwrap();
        }
        assert_eq!(sink.count(), 3);
        assert_eq!(sink.received()[2].to, vec!["c@patients.example".to_owned()]);
        // One for the check, one for the sends: the idle TLS connection was
        // found quiet and reused.
        assert_eq!(sink.state.connections(), 2);
    }

    #[tokio::test]
    async fn starttls_and_login_deliver() {
        let sink = sink(false).await;
        delivers(&sink, &config(&sink, SmtpSecurity::StartTls, "127.0.0.1")).await;
    }

    #[tokio::test]
    async fn implicit_tls_and_login_deliver() {
        let sink = sink(true).await;
        delivers(&sink, &config(&sink, SmtpSecurity::Tls, "localhost")).await;
    }

    #[tokio::test]
    async fn an_untrusted_certificate_is_a_transient_tls_error() {
        for (implicit_tls, security) in [(false, SmtpSecurity::StartTls), (true, SmtpSecurity::Tls)]
        {
            let sink = sink(implicit_tls).await;
            // The system's roots only: the test CA is unknown.
            let mailer = SmtpMailer::new(&config(&sink, security, "127.0.0.1")).unwrap();
            let err = mailer
                .send_email(&email("a@patients.example"))
                .await
                .unwrap_err();
            assert!(
                matches!(err, DeliveryError::Transient(_)),
                "{security:?}: {err}"
            );
            assert!(
                err.to_string().contains("TLS with the SMTP server failed"),
                "{security:?}: {err}"
            );
            assert!(
                err.to_string().contains("certificate"),
                "{security:?}: {err}"
            );
            assert!(sink.received().is_empty());
        }
    }

    /// Linux only: all of 127/8 is loopback there.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_certificate_for_another_name_is_refused() {
        let state = Arc::new(SmtpSinkState::default());
        let sink = SmtpSink::start_tls_on("127.0.0.2:0".parse().unwrap(), state).await;
        // The certificate names localhost and 127.0.0.1 only.
        let mut config = config(&sink, SmtpSecurity::Tls, "127.0.0.2");
        config.username = None;
        config.password = None;
        let mailer = SmtpMailer::with_extra_roots(&config, vec![test_ca()]).unwrap();
        let err = mailer.check().await.unwrap_err();
        assert!(matches!(err, DeliveryError::Transient(_)), "{err}");
        assert!(
            err.to_string().contains("TLS with the SMTP server failed"),
            "{err}"
        );
        assert!(err.to_string().contains("certificate"), "{err}");
        assert_eq!(sink.state.connections(), 1);
    }
}
