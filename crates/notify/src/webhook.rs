//! Signed webhooks to a practice's own systems (its EHR integration, a
//! data warehouse): `POST <endpoint url>` with a JSON body and
//!
//! ```text
//! Content-Type: application/json
//! Enroll-Event: patient.activated
//! Enroll-Delivery: <the event's UUID>
//! Enroll-Timestamp: <unix seconds of this attempt>
//! Enroll-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>
//! ```
//!
//! The same hyper client as the SMS sender (see `HttpSmsSender` for why
//! not reqwest). Whether an answer counts as delivered is
//! `enroll_core::webhook_outcome`'s call; this only reports it.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::Uri;
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue, USER_AGENT};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

use crate::{DeliveryError, tls};

/// Header names, also for receivers written in Rust and for the tests.
pub const EVENT_HEADER: &str = "enroll-event";
pub const DELIVERY_HEADER: &str = "enroll-delivery";
pub const TIMESTAMP_HEADER: &str = "enroll-timestamp";
pub const SIGNATURE_HEADER: &str = "enroll-signature";

/// A receiver's answer body is read (and dropped) up to this size, so the
/// connection can be reused; anything bigger is cut off.
const MAX_ANSWER_BYTES: usize = 16 * 1024;

/// `v1=` and the hex HMAC-SHA256 of `"<timestamp>.<body>"` keyed with the
/// endpoint's secret (its UTF-8 bytes, as given or generated). The
/// timestamp is signed with the body so that a captured request cannot be
/// replayed later under a fresh timestamp.
pub fn webhook_signature(secret: &str, timestamp: i64, body: &str) -> String {
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Why an endpoint URL is refused, in words for the administrator.
pub fn check_webhook_url(url: &str) -> Result<Uri, String> {
    let uri: Uri = url
        .trim()
        .parse()
        .map_err(|_| "the URL cannot be read; write it as https://host/path".to_string())?;
    let Some(host) = uri.host().filter(|h| !h.is_empty()) else {
        return Err("the URL has no host; write it as https://host/path".into());
    };
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if is_loopback(host) => {}
        Some("http") => {
            return Err(
                "the URL must use https:// (plain http:// is allowed only to this machine: localhost, 127.0.0.1 or ::1), \
                 because the events name patients by MRN"
                    .into(),
            );
        }
        _ => return Err("the URL must start with https://".into()),
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(
            "the URL must not carry a user name or password; the signature authenticates Enroll"
                .into(),
        );
    }
    Ok(uri)
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// One attempt of one event to one endpoint, signed as it is sent.
#[derive(Clone)]
pub struct OutgoingWebhook {
    pub url: String,
    pub secret: SecretString,
    /// `patient.activated`, ...
    pub event_type: String,
    /// The event's UUID: the same on every attempt, so a receiver can
    /// drop a repeat (delivery is at least once).
    pub delivery_id: String,
    /// Unix seconds of this attempt.
    pub timestamp: i64,
    /// The JSON body, byte for byte as signed.
    pub body: String,
}

/// Shows neither the secret nor the body (which names a patient by MRN).
impl fmt::Debug for OutgoingWebhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutgoingWebhook")
            .field("event_type", &self.event_type)
            .field("delivery_id", &self.delivery_id)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// Posts webhooks; answers the HTTP status, or a transient error when no
/// answer came (a permanent one when the request cannot be made at all).
#[async_trait::async_trait]
pub trait WebhookSender: Send + Sync {
    async fn post(&self, webhook: &OutgoingWebhook) -> Result<u16, DeliveryError>;
}

/// Sends webhooks over HTTPS (plain HTTP only to loopback), with a timeout
/// on connecting and on the whole request; redirects are not followed.
#[derive(Clone)]
pub struct HttpWebhookSender {
    client: tls::HttpsClient,
    timeout: Duration,
}

impl fmt::Debug for HttpWebhookSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpWebhookSender")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl HttpWebhookSender {
    pub fn new(timeout: Duration) -> Result<HttpWebhookSender, DeliveryError> {
        let timeout = timeout.max(Duration::from_secs(1));
        let tls = tls::client_config().map_err(|err| {
            DeliveryError::Permanent(format!("the webhook client's TLS cannot be set up: {err}"))
        })?;
        let client = tls::https_client(tls, timeout);
        Ok(HttpWebhookSender { client, timeout })
    }

    fn request(&self, webhook: &OutgoingWebhook) -> Result<hyper::Request<Full<Bytes>>, String> {
        // Checked again here: an endpoint written around the API's check
        // (by hand in the database) gets no plain-http request either.
        let uri = check_webhook_url(&webhook.url)?;
        let signature = webhook_signature(
            webhook.secret.expose_secret(),
            webhook.timestamp,
            &webhook.body,
        );
        let header = |value: &str| {
            HeaderValue::from_str(value).map_err(|_| "a header cannot be sent".to_string())
        };
        let mut request = hyper::Request::post(uri)
            .header(CONTENT_TYPE, "application/json")
            .header(
                USER_AGENT,
                concat!("enroll-webhooks/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::from(webhook.body.clone())))
            .map_err(|_| "the webhook request could not be built".to_string())?;
        let headers = request.headers_mut();
        for (name, value) in [
            (EVENT_HEADER, header(&webhook.event_type)?),
            (DELIVERY_HEADER, header(&webhook.delivery_id)?),
            (TIMESTAMP_HEADER, header(&webhook.timestamp.to_string())?),
            (SIGNATURE_HEADER, header(&signature)?),
        ] {
            headers.insert(HeaderName::from_static(name), value);
        }
        Ok(request)
    }
}

#[async_trait::async_trait]
impl WebhookSender for HttpWebhookSender {
    async fn post(&self, webhook: &OutgoingWebhook) -> Result<u16, DeliveryError> {
        let request = self.request(webhook).map_err(DeliveryError::Permanent)?;
        let exchange = async {
            let answer = self.client.request(request).await?;
            let status = answer.status().as_u16();
            // Read what the receiver says (bounded) so the connection is
            // reused; its words are not kept.
            let _ = Limited::new(answer.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await;
            Ok::<u16, hyper_util::client::legacy::Error>(status)
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(status)) => Ok(status),
            // hyper's messages can carry the URL; ours carry only the kind.
            Ok(Err(err)) if err.is_connect() => Err(DeliveryError::Transient(
                "could not connect to the receiver".into(),
            )),
            Ok(Err(_)) => Err(DeliveryError::Transient(
                "the request to the receiver failed".into(),
            )),
            Err(_elapsed) => Err(DeliveryError::Transient(format!(
                "the receiver did not answer within {} s",
                self.timeout.as_secs()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against a value computed elsewhere (Python's hmac module:
    /// `hmac.new(b"whsec-test", b"1800000000.{\"id\":1}", "sha256")`).
    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        assert_eq!(
            webhook_signature("whsec-test", 1_800_000_000, "{\"id\":1}"),
            "v1=6d8b25fbafeb703daf81c0c3259b7ba42acc6423398afcec83171a624bdb5c0e"
        );
        let one = webhook_signature("s", 1, "{}");
        assert_ne!(
            one,
            webhook_signature("s", 2, "{}"),
            "the timestamp is signed"
        );
        assert_ne!(one, webhook_signature("s", 1, "{ }"), "the body is signed");
        assert_ne!(one, webhook_signature("t", 1, "{}"), "the secret keys it");
    }

    #[test]
    fn urls_must_be_https_unless_the_receiver_is_this_machine() {
        for good in [
            "https://ehr.example.org/hooks/enroll",
            "http://127.0.0.1:9000/hook",
            "http://localhost/hook",
            "http://[::1]:8080/",
        ] {
            assert!(check_webhook_url(good).is_ok(), "{good}");
        }
        for (bad, words) in [
            ("http://ehr.example.org/hook", "https"),
            ("ftp://ehr.example.org/", "https://"),
            ("not a url", "cannot be read"),
            ("/relative", "no host"),
            ("https://user:pw@ehr.example.org/", "password"),
        ] {
            let err = check_webhook_url(bad).err().unwrap_or_default();
            assert!(err.contains(words), "{bad}: {err}");
        }
    }

    #[test]
    fn debug_shows_no_secret_or_body() {
        let webhook = OutgoingWebhook {
            url: "https://ehr.example.org/".into(),
            secret: "top-secret".into(),
            event_type: "patient.activated".into(),
            delivery_id: "d".into(),
            timestamp: 1,
            body: "{\"mrn\":\"MRN-77\"}".into(),
        };
        let shown = format!("{webhook:?}");
        assert!(
            !shown.contains("top-secret") && !shown.contains("MRN-77"),
            "{shown}"
        );
    }
}
