//! Invite emails over SMTP with lettre: a pooled async transport, a
//! multipart/alternative message with a stable Message-ID and RFC 8058
//! one-click unsubscribe headers, and the transient/permanent split of failures.

use std::error::Error as _;
use std::fmt;
use std::sync::RwLock;
use std::time::Duration;

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Deserialize;

use crate::{DeliveryError, EmailSender, OutgoingEmail};

/// How the connection to the SMTP server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// No TLS at all: only for a relay on the same host or a test server.
    Plain,
    /// Plain connect, then STARTTLS, which is required (usually port 587).
    #[default]
    #[serde(alias = "start_tls", alias = "start-tls")]
    StartTls,
    /// TLS from the first byte ("SMTPS", usually port 465).
    Tls,
}

/// Where and how to send email. Deserialises from configuration; every field
/// has a default (`localhost:587`, STARTTLS, no credentials, 4 pooled
/// connections, 30 s timeout).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub username: Option<String>,
    pub password: Option<String>,
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

/// Hides the password.
impl fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("pool_size", &self.pool_size)
            .field("timeout_secs", &self.timeout_secs)
            .finish()
    }
}

/// Sends invite emails through one SMTP server with a connection pool.
///
/// Create it inside a Tokio runtime (the pool runs a clean-up task) and drop
/// it there too. Share it with an `Arc`.
pub struct SmtpMailer {
    config: SmtpConfig,
    /// Swapped for a fresh pool when an operation times out (see
    /// [`SmtpMailer::run`]).
    transport: RwLock<AsyncSmtpTransport<Tokio1Executor>>,
    timeout: Duration,
}

impl fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpMailer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn config_error(what: impl fmt::Display) -> DeliveryError {
    DeliveryError::Permanent(format!("invalid SMTP configuration: {what}"))
}

fn build_transport(
    config: &SmtpConfig,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, DeliveryError> {
    let host = config.host.trim();
    if host.is_empty() {
        return Err(config_error("the host is empty"));
    }
    if config.port == 0 {
        return Err(config_error("the port is 0"));
    }
    let builder = match config.security {
        SmtpSecurity::Plain => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
        SmtpSecurity::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)
            .map_err(|err| config_error(format_args!("STARTTLS setup for {host}: {err}")))?,
        SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host)
            .map_err(|err| config_error(format_args!("TLS setup for {host}: {err}")))?,
    };
    let mut builder = builder
        .port(config.port)
        .timeout(Some(Duration::from_secs(config.timeout_secs.max(1))))
        .pool_config(PoolConfig::new().max_size(config.pool_size.max(1)));
    match (&config.username, &config.password) {
        (Some(user), Some(password)) => {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        (None, None) => {}
        (Some(_), None) => return Err(config_error("a username is set without a password")),
        (None, Some(_)) => return Err(config_error("a password is set without a username")),
    }
    Ok(builder.build())
}

impl SmtpMailer {
    /// Builds the transport; connects lazily on the first send or
    /// [`SmtpMailer::check`]. `timeout_secs` bounds the connect and also each
    /// whole operation (a send or a check).
    pub fn new(config: &SmtpConfig) -> Result<SmtpMailer, DeliveryError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(config_error(
                "the SMTP mailer must be created inside a Tokio runtime",
            ));
        }
        let transport = build_transport(config)?;
        if config.security == SmtpSecurity::Plain && config.username.is_some() {
            tracing::warn!(
                host = %config.host,
                "SMTP credentials are configured without TLS; the password crosses the network in clear"
            );
        }
        Ok(SmtpMailer {
            config: config.clone(),
            transport: RwLock::new(transport),
            timeout: Duration::from_secs(config.timeout_secs.max(1)),
        })
    }

    fn current(&self) -> AsyncSmtpTransport<Tokio1Executor> {
        match self.transport.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Runs one operation with the overall time limit. lettre's async client
    /// bounds only the connect, so a server that accepts and then stalls
    /// would hang the dispatcher. A timed-out operation leaves its pooled
    /// connection mid-conversation; reusing it could mix up replies, so the
    /// whole pool is shut down and replaced.
    async fn run<T, F>(&self, operation: F) -> Result<T, DeliveryError>
    where
        F: Future<Output = Result<T, lettre::transport::smtp::Error>>,
    {
        match tokio::time::timeout(self.timeout, operation).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(classify(&err)),
            Err(_elapsed) => {
                let stale = self.current();
                if let Ok(fresh) = build_transport(&self.config) {
                    match self.transport.write() {
                        Ok(mut guard) => *guard = fresh,
                        Err(poisoned) => *poisoned.into_inner() = fresh,
                    }
                }
                stale.shutdown().await;
                Err(DeliveryError::Transient(format!(
                    "the SMTP server did not finish within {} s",
                    self.timeout.as_secs()
                )))
            }
        }
    }

    /// Connects, greets and says goodbye: the `enroll doctor` check.
    pub async fn check(&self) -> Result<(), DeliveryError> {
        let transport = self.current();
        if self.run(transport.test_connection()).await? {
            Ok(())
        } else {
            Err(DeliveryError::Transient(
                "the SMTP server did not answer the connection test".to_owned(),
            ))
        }
    }
}

#[async_trait::async_trait]
impl EmailSender for SmtpMailer {
    async fn send_email(&self, email: &OutgoingEmail) -> Result<(), DeliveryError> {
        let message = build_message(email)?;
        let transport = self.current();
        let result = self.run(transport.send(message)).await.map(|_| ());
        if let Err(err) = &result {
            tracing::debug!(message_id = %email.message_id, error = %err, "SMTP delivery failed");
        }
        result
    }
}

/// Printable ASCII without spaces and without the characters that would end
/// or split an angle-bracketed header value.
fn is_header_token(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b',' | b'"'))
}

/// Builds the MIME message. Errors are permanent: resending the same input
/// cannot fix a malformed address or header.
pub(crate) fn build_message(email: &OutgoingEmail) -> Result<Message, DeliveryError> {
    let to: Mailbox = email.to.trim().parse().map_err(|_| {
        DeliveryError::Permanent("the recipient address is not a valid email address".to_owned())
    })?;
    let from: Mailbox = email.from.trim().parse().map_err(|_| {
        DeliveryError::Permanent(
            "the sender address (from) is not a valid email address".to_owned(),
        )
    })?;
    let message_id = email.message_id.trim();
    if !is_header_token(message_id) || !message_id.contains('@') {
        return Err(DeliveryError::Permanent(
            "the Message-ID must look like left@right, without angle brackets or spaces".to_owned(),
        ));
    }
    let unsubscribe = email.list_unsubscribe.trim();
    let is_web_url = unsubscribe.starts_with("https://") || unsubscribe.starts_with("http://");
    if !is_header_token(unsubscribe) || !is_web_url {
        return Err(DeliveryError::Permanent(
            "the List-Unsubscribe value must be an http(s) URL without spaces".to_owned(),
        ));
    }
    // Pre-encoded so lettre does not RFC 2047-encode or fold the URL: mail
    // providers read it verbatim for one-click unsubscribe (RFC 8058). The
    // values are checked above to be plain ASCII without spaces or brackets.
    let list_unsubscribe = format!("<{unsubscribe}>");
    let one_click = "List-Unsubscribe=One-Click".to_owned();
    Message::builder()
        .from(from)
        .to(to)
        .subject(email.content.subject.as_str())
        .message_id(Some(format!("<{message_id}>")))
        .raw_header(HeaderValue::dangerous_new_pre_encoded(
            HeaderName::new_from_ascii_str("List-Unsubscribe"),
            list_unsubscribe.clone(),
            list_unsubscribe,
        ))
        .raw_header(HeaderValue::dangerous_new_pre_encoded(
            HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
            one_click.clone(),
            one_click,
        ))
        .multipart(MultiPart::alternative_plain_html(
            email.content.text.clone(),
            email.content.html.clone(),
        ))
        .map_err(|err| DeliveryError::Permanent(format!("the message could not be built: {err}")))
}

/// The kind of the first I/O error in the chain, e.g. "connection refused".
fn io_kind(err: &lettre::transport::smtp::Error) -> Option<std::io::ErrorKind> {
    let mut source = err.source();
    while let Some(inner) = source {
        if let Some(io) = inner.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        source = inner.source();
    }
    None
}

/// Maps a lettre error to the dispatcher's two cases. The server's reply text
/// is never copied: it often quotes the recipient's address.
pub(crate) fn classify(err: &lettre::transport::smtp::Error) -> DeliveryError {
    if let Some(code) = err.status() {
        let code = code.to_string();
        if err.is_permanent() {
            if matches!(code.as_str(), "530" | "534" | "535" | "538") {
                return DeliveryError::Permanent(format!(
                    "the SMTP server refused the login ({code}): check the SMTP username and password"
                ));
            }
            return DeliveryError::Permanent(format!(
                "the SMTP server rejected the message ({code})"
            ));
        }
        return DeliveryError::Transient(format!("the SMTP server deferred the message ({code})"));
    }
    if err.is_timeout() {
        return DeliveryError::Transient("the SMTP server timed out".to_owned());
    }
    if err.is_tls() {
        let detail = err
            .source()
            .map(|source| format!(": {source}"))
            .unwrap_or_default();
        return DeliveryError::Transient(format!("TLS with the SMTP server failed{detail}"));
    }
    if err.is_client() {
        // lettre's client errors are fixed strings (no addresses). One is about
        // the recipient: a non-ASCII address the server cannot take.
        let detail = err.source().map(|s| s.to_string()).unwrap_or_default();
        if detail.contains("SMTPUTF8") {
            return DeliveryError::Permanent(
                "the recipient address is not ASCII and the SMTP server does not support SMTPUTF8"
                    .to_owned(),
            );
        }
        return DeliveryError::Transient(format!("SMTP client error: {detail}"));
    }
    if err.is_response() {
        return DeliveryError::Transient("the SMTP server sent an unreadable reply".to_owned());
    }
    if err.is_transport_shutdown() {
        return DeliveryError::Transient("the SMTP transport was shut down".to_owned());
    }
    match io_kind(err) {
        Some(kind) => DeliveryError::Transient(format!("SMTP connection failed: {kind}")),
        None => DeliveryError::Transient("SMTP connection failed".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RenderedEmail;

    fn email() -> OutgoingEmail {
        OutgoingEmail {
            to: "Maria <maria@example.org>".to_owned(),
            from: "Main Street Clinic <invites@clinic.example>".to_owned(),
            message_id: "invite-42@enroll.example".to_owned(),
            list_unsubscribe: "https://enroll.example/unsubscribe/42/abcdef0123456789abcdef0123456789abcdef0123456789".to_owned(),
            content: RenderedEmail {
                subject: "Su invitación al portal".to_owned(),
                text: "Hola, Maria".to_owned(),
                html: "<p>Hola, Maria</p>".to_owned(),
            },
        }
    }

    #[test]
    fn message_headers() {
        let formatted = String::from_utf8(build_message(&email()).unwrap().formatted()).unwrap();
        assert!(
            formatted.contains("Message-ID: <invite-42@enroll.example>\r\n"),
            "{formatted}"
        );
        assert!(formatted.contains(
            "List-Unsubscribe: <https://enroll.example/unsubscribe/42/abcdef0123456789abcdef0123456789abcdef0123456789>\r\n"
        ), "{formatted}");
        assert!(formatted.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"));
        assert!(formatted.contains("Content-Type: multipart/alternative;"));
        assert!(formatted.contains("Date: "));
        // The non-ASCII subject is encoded, so the message stays 7-bit.
        assert!(formatted.is_ascii());
    }

    #[test]
    fn bad_inputs_are_permanent_and_name_no_address() {
        let cases: [fn(&mut OutgoingEmail); 8] = [
            |e| e.to = "maria at example.org".to_owned(),
            |e| e.to = String::new(),
            |e| e.from = "clinic@".to_owned(),
            |e| e.message_id = "<invite-42@enroll.example>".to_owned(),
            |e| e.message_id = "invite 42@enroll.example".to_owned(),
            |e| e.message_id = "invite-42".to_owned(),
            |e| e.list_unsubscribe = "mailto:x@example.org".to_owned(),
            |e| e.list_unsubscribe = "https://x.example/a>\r\nBcc: y@example.org".to_owned(),
        ];
        for change in cases {
            let mut e = email();
            change(&mut e);
            let err = build_message(&e).unwrap_err();
            assert!(err.is_permanent(), "{err}");
            assert!(!err.to_string().contains("example.org"), "{err}");
        }
    }

    #[test]
    fn config_defaults_and_debug() {
        let config = SmtpConfig::default();
        assert_eq!(config.host, "localhost");
        assert_eq!(config.port, 587);
        assert_eq!(config.security, SmtpSecurity::StartTls);
        let with_password = SmtpConfig {
            username: Some("user".to_owned()),
            password: Some("hunter2".to_owned()),
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
        ] {
            let config: SmtpConfig =
                serde_json::from_str(&format!(r#"{{"security": "{text}"}}"#)).unwrap();
            assert_eq!(config.security, security);
        }
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
