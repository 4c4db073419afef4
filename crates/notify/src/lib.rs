//! Delivery building blocks of Enroll: the invite texts (email and SMS, English
//! and Spanish, with per-practice overrides), an SMTP sender, an SMS sender for
//! the widely used `Accounts/{sid}/Messages.json` provider API, and the SMS
//! opt-out keywords (DESIGN.md R12, R13).
//!
//! Nothing here decides *whether* to send (the cap of R7 and the SMS limits of
//! R13 live in the core and the store); this crate only renders and delivers,
//! and tells the dispatcher whether a failure is worth retrying
//! ([`DeliveryError::Transient`]) or not ([`DeliveryError::Permanent`]).
//!
//! Why these crates:
//! - `minijinja`: admins edit invite templates at run time, so templates are
//!   compiled from strings (not at build time as with askama); it has
//!   auto-escaping by file extension and a strict-undefined mode, which makes an
//!   override that names any variable other than the four allowed ones fail
//!   validation (R12 guard).
//! - `lettre` (default features off): the maintained async SMTP client (SMTP
//!   conversation, STARTTLS, AUTH) and a MIME builder; its errors tell 4xx
//!   from 5xx replies, which is exactly the transient/permanent split. Its
//!   transport and pool are not used: they leave Nagle's algorithm on, which
//!   cost ~40 ms per message (see `SmtpMailer`), so the mailer opens the
//!   sockets and pools the connections itself.
//! - `tokio-rustls`: implicit TLS (port 465) on those sockets; already in the
//!   tree under lettre and hyper-rustls.
//! - `hyper` + `hyper-util` + `hyper-rustls` (with `http-body-util`, `bytes`,
//!   `form_urlencoded`, `base64`): the HTTP client for the SMS provider. All
//!   were already in the dependency tree (under reqwest and axum). reqwest was
//!   the first choice, but its only rustls feature without aws-lc
//!   (`rustls-no-provider`) is unified into every crate's reqwest and makes each
//!   `reqwest::Client::new()` panic unless the process installed a rustls
//!   provider beforehand, which would break other crates' tests.
//! - `rustls` with the `ring` provider and `rustls-platform-verifier`: one TLS
//!   stack for both senders without OpenSSL or aws-lc (slow to build on 2
//!   cores), configured explicitly so no process-wide default provider is
//!   needed; the platform verifier trusts the system's CA store, so a relay
//!   signed by a practice's own CA works once that CA is installed.
//! - `async-trait`: object-safe async sender traits, so the dispatcher can hold
//!   `Arc<dyn EmailSender>` and tests can swap in fakes.
//! - `hmac`, `sha2`, `hex`: the signature of outbound webhooks (HMAC-SHA256
//!   over the timestamp and the body, hex), sent by the same hyper client.
//! - `thiserror`, `serde`, `serde_json`, `tracing`: errors, configuration,
//!   the provider's JSON answers and logs (which carry no PHI: no addresses,
//!   phone numbers, names or message bodies).

mod email;
mod error;
mod keywords;
mod message;
mod sms;
mod smtp;
mod smtp_error;
mod templates;
#[cfg(feature = "testing")]
pub mod testing;
mod tls;
mod webhook;

use std::fmt;

pub use email::{SmtpConfig, SmtpMailer, SmtpSecurity};
pub use error::DeliveryError;
pub use keywords::{SmsKeyword, is_opt_out_keyword};
pub use secrecy::{ExposeSecret, SecretString};
pub use sms::{HttpSmsSender, SmsConfig};
pub use templates::{SMS_MAX_CHARS, TemplateError, TemplateKind, Templates};
pub use webhook::{
    DELIVERY_HEADER, EVENT_HEADER, HttpWebhookSender, OutgoingWebhook, SIGNATURE_HEADER,
    TIMESTAMP_HEADER, WebhookSender, check_webhook_url, webhook_signature,
};

/// The language of an invite (enroll-core's, one mapping each way).
pub use enroll_core::Language;
/// The recipients' types: an outgoing message can only carry an address
/// that core's R1 check accepts.
pub use enroll_core::{E164Phone, EmailAddress};

/// Everything an invite may show (R12: first name and practice name, plus the
/// two links). There are deliberately no fields for anything else.
#[derive(Clone, PartialEq, Eq)]
pub struct InviteContext {
    pub first_name: String,
    pub practice_name: String,
    pub activation_url: String,
    pub unsubscribe_url: String,
    pub language: Language,
}

/// Redacts the first name (PHI) and the links (the activation link carries a
/// secret token), so a stray `{:?}` in a log line leaks nothing.
impl fmt::Debug for InviteContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InviteContext")
            .field("first_name", &"<redacted>")
            .field("practice_name", &self.practice_name)
            .field("activation_url", &"<redacted>")
            .field("unsubscribe_url", &"<redacted>")
            .field("language", &self.language)
            .finish()
    }
}

/// A rendered invite email: a one-line subject, a plain-text and an HTML body.
#[derive(Clone, PartialEq, Eq)]
pub struct RenderedEmail {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// Shows sizes only: the parts contain the patient's first name and the
/// activation link.
impl fmt::Debug for RenderedEmail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RenderedEmail")
            .field("subject_len", &self.subject.len())
            .field("text_len", &self.text.len())
            .field("html_len", &self.html.len())
            .finish()
    }
}

/// An email ready for an [`EmailSender`].
#[derive(Clone, PartialEq, Eq)]
pub struct OutgoingEmail {
    /// The patient's address.
    pub to: EmailAddress,
    /// The practice's sender, e.g. `"Main Street Clinic <invites@clinic.example>"`.
    pub from: String,
    /// Without angle brackets, e.g. `"invite-42@enroll.example"`; stable per
    /// invite so a re-send after a crash carries the same id.
    pub message_id: String,
    /// The one-click unsubscribe URL (RFC 8058).
    pub list_unsubscribe: String,
    pub content: RenderedEmail,
}

/// Redacts the recipient (PHI).
impl fmt::Debug for OutgoingEmail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutgoingEmail")
            .field("to", &"<redacted>")
            .field("from", &self.from)
            .field("message_id", &self.message_id)
            .field("content", &self.content)
            .finish_non_exhaustive()
    }
}

/// A text message ready for an [`SmsSender`].
#[derive(Clone, PartialEq, Eq)]
pub struct OutgoingSms {
    /// The patient's cell phone, e.g. `+16175550123`.
    pub to: E164Phone,
    pub body: String,
}

/// Redacts the number and the body (PHI and the activation token).
impl fmt::Debug for OutgoingSms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutgoingSms")
            .field("to", &"<redacted>")
            .field("body_chars", &self.body.chars().count())
            .finish()
    }
}

/// Sends invite emails.
#[async_trait::async_trait]
pub trait EmailSender: Send + Sync {
    async fn send_email(&self, email: &OutgoingEmail) -> Result<(), DeliveryError>;
}

/// Sends invite texts; returns the provider's message id.
#[async_trait::async_trait]
pub trait SmsSender: Send + Sync {
    async fn send_sms(&self, sms: &OutgoingSms) -> Result<String, DeliveryError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_redacts_patient_data() {
        let ctx = InviteContext {
            first_name: "Maria".into(),
            practice_name: "Main Street Clinic".into(),
            activation_url: "https://enroll.example/activate/SECRET".into(),
            unsubscribe_url: "https://enroll.example/unsubscribe/1/abc".into(),
            language: Language::Spanish,
        };
        let shown = format!("{ctx:?}");
        assert!(!shown.contains("Maria"));
        assert!(!shown.contains("SECRET"));
        assert!(shown.contains("Main Street Clinic"));

        let email = OutgoingEmail {
            to: EmailAddress::parse("maria@example.org").unwrap(),
            from: "clinic@example.org".into(),
            message_id: "invite-1@enroll.example".into(),
            list_unsubscribe: ctx.unsubscribe_url.clone(),
            content: RenderedEmail {
                subject: "Hi Maria".into(),
                text: "Hi Maria".into(),
                html: "Hi Maria".into(),
            },
        };
        let shown = format!("{email:?}");
        assert!(!shown.contains("maria@example.org"));
        assert!(!shown.contains("Maria"));

        let sms = OutgoingSms {
            to: E164Phone::parse("+16175550123").unwrap(),
            body: "Hi Maria".into(),
        };
        let shown = format!("{sms:?}");
        assert!(!shown.contains("6175550123"));
        assert!(!shown.contains("Maria"));
    }
}
