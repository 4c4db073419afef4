//! The MIME message of an invitation email, built once for every sender
//! (the SMTP mailer, and the test sink's view of what it was sent).

use lettre::Message;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};

use crate::{DeliveryError, OutgoingEmail};

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
    let to: Mailbox = email.to.as_str().parse().map_err(|_| {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RenderedEmail;

    fn email() -> OutgoingEmail {
        OutgoingEmail {
            to: crate::EmailAddress::parse("maria@example.org").unwrap(),
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
        // A malformed recipient cannot be built: `to` is an `EmailAddress`.
        let cases: [fn(&mut OutgoingEmail); 6] = [
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
}
