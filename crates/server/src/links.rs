//! The links an invite carries and its Message-ID.
//!
//! Unsubscribe links are signed (HMAC-SHA256 over the invite id with an
//! installation secret kept in the settings table) so that nobody can opt
//! another patient out by guessing ids, and so that no extra token needs to
//! be stored per invite.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use jiff::Timestamp;
use sha2::Sha256;
use url::Url;

/// The settings key of the secret that signs links.
pub const LINK_SECRET_SETTING: &str = "link_signing_secret";

/// Bytes of the HMAC kept in a link: 128 bits is beyond guessing.
const SIGNATURE_BYTES: usize = 16;

#[derive(Clone)]
pub struct Links {
    public_url: String,
    message_domain: String,
    secret: Arc<[u8]>,
}

impl Links {
    /// `public_url` is where patients reach this server, e.g.
    /// `https://portal-invites.example.org` (a path is kept; a trailing
    /// slash does not matter). Its host names the Message-IDs.
    pub fn new(public_url: &Url, secret: &[u8]) -> Links {
        Links {
            public_url: public_url.as_str().trim_end_matches('/').to_string(),
            message_domain: public_url
                .host_str()
                .unwrap_or("enroll.invalid")
                .to_string(),
            secret: secret.into(),
        }
    }

    pub fn activation_url(&self, token: &str) -> String {
        format!("{}/a/{token}", self.public_url)
    }

    /// Where a patient types the short code of an in-person letter.
    pub fn short_code_url(&self) -> String {
        format!("{}/code", self.public_url)
    }

    pub fn unsubscribe_url(&self, invite_id: i64) -> String {
        format!(
            "{}/unsubscribe/{invite_id}/{}",
            self.public_url,
            hex::encode(self.signature(invite_id))
        )
    }

    /// True when `signature_hex` is this installation's signature of the id.
    pub fn verify_unsubscribe(&self, invite_id: i64, signature_hex: &str) -> bool {
        let Ok(given) = hex::decode(signature_hex) else {
            return false;
        };
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.secret) else {
            return false;
        };
        mac.update(&invite_id.to_be_bytes());
        mac.verify_truncated_left(&given).is_ok() && given.len() == SIGNATURE_BYTES
    }

    /// Stable for one invite, so a re-send after an interruption carries the
    /// same id and mail systems can tell it is the same message.
    /// The Message-ID of a one-time activation code's email.
    pub fn code_message_id(&self, token_id: i64, at: Timestamp) -> String {
        format!(
            "code-{token_id}-{}@{}",
            at.as_millisecond(),
            self.message_domain
        )
    }

    /// The Message-ID of an administrator's test email (Connections page).
    pub fn test_message_id(&self, at: Timestamp) -> String {
        format!("test-{}@{}", at.as_millisecond(), self.message_domain)
    }

    /// Where this installation is reached, e.g. `https://portal.example.org`.
    pub fn public_root(&self) -> &str {
        &self.public_url
    }

    pub fn message_id(&self, invite_id: i64, invite_created_at: Timestamp) -> String {
        format!(
            "invite-{invite_id}-{}@{}",
            invite_created_at.as_millisecond(),
            self.message_domain
        )
    }

    fn signature(&self, invite_id: i64) -> Vec<u8> {
        // Any key length is valid for HMAC; new_from_slice cannot fail here.
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.secret) {
            Ok(mac) => mac,
            Err(_) => return vec![0; SIGNATURE_BYTES],
        };
        mac.update(&invite_id.to_be_bytes());
        mac.finalize().into_bytes()[..SIGNATURE_BYTES].to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links_of(url: &str, secret: &[u8]) -> Links {
        Links::new(&url.parse().unwrap(), secret)
    }

    #[test]
    fn unsubscribe_links_verify_only_with_their_own_signature() {
        let links = links_of("https://invites.example.org/", b"secret one");
        let url = links.unsubscribe_url(42);
        let signature = url.rsplit('/').next().unwrap();
        assert!(
            url.starts_with("https://invites.example.org/unsubscribe/42/"),
            "{url}"
        );
        assert!(links.verify_unsubscribe(42, signature));
        assert!(!links.verify_unsubscribe(43, signature), "another invite");
        assert!(
            !links_of("https://x", b"secret two").verify_unsubscribe(42, signature),
            "another secret"
        );
        assert!(
            !links.verify_unsubscribe(42, &signature[..8]),
            "a shortened signature"
        );
        assert!(!links.verify_unsubscribe(42, "not hex"));
    }

    #[test]
    fn message_ids_are_stable_per_invite_and_use_the_public_host() {
        let links = links_of("http://127.0.0.1:8080", b"s");
        let at: Timestamp = "2026-11-25T10:00:00Z".parse().unwrap();
        assert_eq!(links.message_id(7, at), links.message_id(7, at));
        assert_eq!(
            links.message_id(7, at),
            format!("invite-7-{}@127.0.0.1", at.as_millisecond())
        );
        assert_ne!(links.message_id(7, at), links.message_id(8, at));
    }

    #[test]
    fn a_path_in_the_public_url_is_kept() {
        let links = links_of("https://example.org/enroll/", b"s");
        assert_eq!(links.activation_url("t"), "https://example.org/enroll/a/t");
        assert!(
            links
                .message_id(1, Timestamp::UNIX_EPOCH)
                .ends_with("@example.org")
        );
    }
}
