//! Invite texts through the widely used SMS provider API shape:
//! `POST {base_url}/2010-04-01/Accounts/{sid}/Messages.json` with HTTP basic
//! auth and the form fields `To`, `From`, `Body`; the answer's `sid` is the
//! provider's message id.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, USER_AGENT};
use hyper::{StatusCode, Uri};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::{DeliveryError, OutgoingSms, SmsSender, tls};

/// The provider's answers are small JSON documents; anything bigger is cut.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The SMS provider account (`[sms]` in the configuration); texts are off
/// while `account_sid` is empty. `base_url` defaults to
/// `https://api.twilio.com` and `timeout_secs` to 15. `Debug` shows neither
/// secret (`SecretString`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmsConfig {
    pub base_url: String,
    pub account_sid: String,
    pub auth_token: SecretString,
    /// The sending number (E.164) or sender id.
    pub from: String,
    pub timeout_secs: u64,
    /// The secret last segment of the inbound webhook URL given to the
    /// provider: `<public_url>/webhooks/sms/<webhook_secret>`; none: no
    /// webhook (STOP/START replies are not heard).
    pub webhook_secret: Option<SecretString>,
}

impl SmsConfig {
    /// Texts go out only with a provider account.
    pub fn enabled(&self) -> bool {
        !self.account_sid.trim().is_empty()
    }
}

impl Default for SmsConfig {
    fn default() -> Self {
        SmsConfig {
            base_url: "https://api.twilio.com".to_owned(),
            account_sid: String::new(),
            auth_token: SecretString::default(),
            from: String::new(),
            timeout_secs: 15,
            webhook_secret: None,
        }
    }
}

/// Sends invite texts over HTTPS (plain HTTP only to a loopback stand-in).
///
/// Built on hyper and hyper-rustls rather than reqwest: reqwest's only rustls
/// feature without aws-lc (`rustls-no-provider`) would, through feature
/// unification, make every `reqwest::Client` in the workspace panic unless the
/// process had installed a rustls provider first.
#[derive(Clone)]
pub struct HttpSmsSender {
    client: tls::HttpsClient,
    endpoint: Uri,
    authorization: HeaderValue,
    from: String,
    timeout: Duration,
}

impl fmt::Debug for HttpSmsSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpSmsSender")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

fn config_error(what: impl fmt::Display) -> DeliveryError {
    DeliveryError::Permanent(format!("invalid SMS configuration: {what}"))
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl HttpSmsSender {
    pub fn new(config: &SmsConfig) -> Result<HttpSmsSender, DeliveryError> {
        let base = config.base_url.trim().trim_end_matches('/');
        let base_uri: Uri = base
            .parse()
            .map_err(|err| config_error(format_args!("base_url: {err}")))?;
        let Some(host) = base_uri.host() else {
            return Err(config_error("base_url has no host"));
        };
        match base_uri.scheme_str() {
            Some("https") => {}
            Some("http") if is_loopback(host) => {}
            Some("http") => {
                return Err(config_error(
                    "base_url must use https (plain http is allowed only to a loopback address)",
                ));
            }
            other => {
                return Err(config_error(format_args!(
                    "base_url must start with https:// (scheme {other:?})"
                )));
            }
        }
        if base_uri.query().is_some() {
            return Err(config_error("base_url must not have a query"));
        }
        let sid = config.account_sid.trim();
        if sid.is_empty() || !sid.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(config_error("the account SID must be letters and digits"));
        }
        if config.auth_token.expose_secret().is_empty() {
            return Err(config_error("the auth token is empty"));
        }
        let from = config.from.trim();
        if from.is_empty() {
            return Err(config_error("the sending number (from) is empty"));
        }
        let endpoint: Uri = format!("{base}/2010-04-01/Accounts/{sid}/Messages.json")
            .parse()
            .map_err(|err| config_error(format_args!("endpoint: {err}")))?;
        let credentials = BASE64.encode(format!("{sid}:{}", config.auth_token.expose_secret()));
        let mut authorization = HeaderValue::from_str(&format!("Basic {credentials}"))
            .map_err(|_| config_error("the credentials cannot be sent in a header"))?;
        authorization.set_sensitive(true);

        let timeout = Duration::from_secs(config.timeout_secs.max(1));
        let tls = tls::client_config().map_err(|err| config_error(format_args!("TLS: {err}")))?;
        let client = tls::https_client(tls, timeout);
        Ok(HttpSmsSender {
            client,
            endpoint,
            authorization,
            from: from.to_owned(),
            timeout,
        })
    }
}

#[derive(Deserialize)]
struct Accepted {
    sid: Option<String>,
}

#[derive(Deserialize)]
struct Refused {
    code: Option<u32>,
}

#[async_trait::async_trait]
impl SmsSender for HttpSmsSender {
    async fn send_sms(&self, sms: &OutgoingSms) -> Result<String, DeliveryError> {
        // E.164 by its type (`enroll_core::E164Phone`).
        let to = sms.to.as_str();
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("To", to)
            .append_pair("From", &self.from)
            .append_pair("Body", &sms.body)
            .finish();
        let request = hyper::Request::post(self.endpoint.clone())
            .header(AUTHORIZATION, self.authorization.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .header(
                USER_AGENT,
                concat!("enroll-notify/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::from(form)))
            .map_err(|_| {
                DeliveryError::Permanent("the SMS request could not be built".to_owned())
            })?;

        let answer = match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(err)) => {
                // hyper's messages can carry the URL; ours carry only the kind.
                let what = if err.is_connect() {
                    "could not connect to the SMS provider"
                } else {
                    "the request to the SMS provider failed"
                };
                return Err(DeliveryError::Transient(what.to_owned()));
            }
            Err(_elapsed) => {
                return Err(DeliveryError::Transient(format!(
                    "the SMS provider did not answer within {} s",
                    self.timeout.as_secs()
                )));
            }
        };
        let status = answer.status();
        let body = tokio::time::timeout(
            self.timeout,
            Limited::new(answer.into_body(), MAX_ANSWER_BYTES).collect(),
        )
        .await
        .ok()
        .and_then(Result::ok)
        .map(|collected| collected.to_bytes());

        if status.is_success() {
            // The provider took the message: never report a failure now, or
            // the dispatcher would retry and the patient get it twice.
            let sid = body
                .and_then(|bytes| serde_json::from_slice::<Accepted>(&bytes).ok())
                .and_then(|accepted| accepted.sid)
                .unwrap_or_default();
            if sid.is_empty() {
                tracing::warn!(
                    status = status.as_u16(),
                    "SMS accepted but the answer carried no message sid"
                );
            }
            return Ok(sid);
        }
        let code = body
            .and_then(|bytes| serde_json::from_slice::<Refused>(&bytes).ok())
            .and_then(|refused| refused.code);
        let classified = classify(status, code);
        tracing::debug!(status = status.as_u16(), code, error = %classified, "SMS delivery failed");
        Err(classified)
    }
}

/// Maps a refusal to the dispatcher's two cases. The provider's `message` is
/// not copied: it quotes the phone number.
pub(crate) fn classify(status: StatusCode, code: Option<u32>) -> DeliveryError {
    let http = status.as_u16();
    let code_text = code.map(|c| format!(", code {c}")).unwrap_or_default();
    match http {
        401 | 403 => DeliveryError::Permanent(format!(
            "the SMS provider refused the credentials (HTTP {http}{code_text}): check the account SID and auth token"
        )),
        404 => DeliveryError::Permanent(format!(
            "the SMS provider does not know this endpoint (HTTP 404{code_text}): check base_url and the account SID"
        )),
        408 | 429 => DeliveryError::Transient(format!(
            "the SMS provider asked to try again later (HTTP {http}{code_text})"
        )),
        400..=499 => {
            let reason = match code {
                Some(21211) => "the recipient is not a valid phone number",
                Some(21614) => "the recipient is not a mobile number",
                Some(21610) => "the recipient has opted out of texts from this sender",
                Some(21612) => "the provider cannot reach the recipient's number",
                _ => "the SMS provider refused the message",
            };
            DeliveryError::Permanent(format!("{reason} (HTTP {http}{code_text})"))
        }
        _ if status.is_server_error() => {
            DeliveryError::Transient(format!("the SMS provider failed (HTTP {http}{code_text})"))
        }
        _ => DeliveryError::Transient(format!(
            "unexpected answer from the SMS provider (HTTP {http})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_table() {
        let s = |n| StatusCode::from_u16(n).unwrap();
        let table: &[(u16, Option<u32>, bool)] = &[
            (400, Some(21211), true),
            (400, Some(21614), true),
            (400, Some(21610), true),
            (400, Some(21606), true),
            (400, None, true),
            (401, Some(20003), true),
            (403, None, true),
            (404, Some(20404), true),
            (408, None, false),
            (429, Some(20429), false),
            (500, None, false),
            (502, None, false),
            (503, None, false),
            (302, None, false),
        ];
        for (status, code, permanent) in table {
            let err = classify(s(*status), *code);
            assert_eq!(err.is_permanent(), *permanent, "{status} {code:?}: {err}");
        }
        assert!(classify(s(401), None).to_string().contains("credentials"));
        assert!(classify(s(400), Some(21211)).to_string().contains("21211"));
    }

    #[test]
    fn config_is_checked() {
        let good = SmsConfig {
            base_url: "https://api.twilio.com/".to_owned(),
            account_sid: "AC0123456789abcdef".to_owned(),
            auth_token: "token".into(),
            from: "+16175550100".to_owned(),
            ..SmsConfig::default()
        };
        let sender = HttpSmsSender::new(&good).unwrap();
        assert_eq!(
            sender.endpoint.to_string(),
            "https://api.twilio.com/2010-04-01/Accounts/AC0123456789abcdef/Messages.json"
        );
        assert!(!format!("{good:?}").contains("token\""));
        HttpSmsSender::new(&SmsConfig {
            base_url: "http://127.0.0.1:9999".to_owned(),
            ..good.clone()
        })
        .unwrap();
        HttpSmsSender::new(&SmsConfig {
            base_url: "http://localhost:9999".to_owned(),
            ..good.clone()
        })
        .unwrap();
        let bad = [
            SmsConfig {
                base_url: "http://sms.example.com".to_owned(),
                ..good.clone()
            },
            SmsConfig {
                base_url: "ftp://sms.example.com".to_owned(),
                ..good.clone()
            },
            SmsConfig {
                base_url: "not a url".to_owned(),
                ..good.clone()
            },
            SmsConfig {
                account_sid: "AC/../x".to_owned(),
                ..good.clone()
            },
            SmsConfig {
                account_sid: String::new(),
                ..good.clone()
            },
            SmsConfig {
                auth_token: SecretString::default(),
                ..good.clone()
            },
            SmsConfig {
                from: " ".to_owned(),
                ..good.clone()
            },
        ];
        for config in bad {
            assert!(
                HttpSmsSender::new(&config).unwrap_err().is_permanent(),
                "{config:?}"
            );
        }
    }

    #[test]
    fn config_deserialises_with_defaults() {
        let config: SmsConfig = serde_json::from_str(
            r#"{"account_sid": "AC1", "auth_token": "t", "from": "+16175550100"}"#,
        )
        .unwrap();
        assert_eq!(config.base_url, "https://api.twilio.com");
        assert_eq!(config.timeout_secs, 15);
    }
}
