//! What an SMTP failure means to the dispatcher (transient or permanent),
//! shared by the mailer's sends and the pool's connecting and login.

use std::error::Error as _;

use crate::DeliveryError;

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
