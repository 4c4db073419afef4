//! The delivery outcome the dispatcher acts on.

/// Why a send failed. Messages never contain patient data (no addresses, phone
/// numbers, names or bodies) and no text echoed by the remote server, which
/// often quotes the recipient.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// Worth retrying later with backoff: connection refused, timeouts, 4xx SMTP
    /// replies, HTTP 429 and 5xx.
    #[error("transient delivery failure: {0}")]
    Transient(String),
    /// Retrying the same message will not help: a rejected or malformed
    /// recipient, wrong credentials, a configuration error.
    #[error("permanent delivery failure: {0}")]
    Permanent(String),
}

impl DeliveryError {
    /// True for [`DeliveryError::Permanent`].
    pub fn is_permanent(&self) -> bool {
        matches!(self, DeliveryError::Permanent(_))
    }

    /// The message without the transient/permanent prefix.
    pub fn message(&self) -> &str {
        match self {
            DeliveryError::Transient(m) | DeliveryError::Permanent(m) => m,
        }
    }
}
