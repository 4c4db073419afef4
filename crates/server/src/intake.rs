//! From an HL7 frame to a stored, applied and acknowledged message: parse
//! and map with `enroll_hl7` (to the neutral `enroll_core::IntakeEvent`),
//! hand the event to the store (one transaction with the raw message and
//! the ACK), and return the ACK bytes to send.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use enroll_hl7::{
    ErrorCode, ErrorLocation, Header, Hl7Error, Inbound, MappingOptions, MllpError, build_ack,
};
use enroll_store::{
    InboundMessage, IntakeProblem, MessageStatus, ProblemKind, Received, Store, StoreError,
    StoredMessage,
};
use jiff::Timestamp;

use crate::clock::Clock;

/// Everything a connection needs to take in messages; shared by all.
pub struct Intake {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub mapping: MappingOptions,
    /// Makes each ACK's own MSH-10 unique within the process.
    ack_sequence: AtomicU64,
}

/// What one frame led to: the bytes to answer and what was stored.
#[derive(Debug)]
pub struct Handled {
    pub ack: Vec<u8>,
    pub received: Received,
}

impl Intake {
    pub fn new(store: Store, clock: Arc<dyn Clock>, mapping: MappingOptions) -> Intake {
        Intake {
            store,
            clock,
            mapping,
            ack_sequence: AtomicU64::new(0),
        }
    }

    /// Parses, stores, applies and acknowledges one message. An error means
    /// nothing was stored: send no ACK, so the sender tries again.
    /// `listener` names the MLLP listener it came in on.
    pub async fn handle(
        &self,
        bytes: &[u8],
        peer: Option<String>,
        listener: Option<&'static str>,
    ) -> Result<Handled, StoreError> {
        let received_at = self.clock.now();
        let inbound = enroll_hl7::process(bytes, &self.mapping);
        let mut message = inbound_message(&inbound, bytes, peer, received_at);
        message.listener = listener;
        let received = self
            .store
            .receive_hl7(&message, |problem| {
                self.ack_text(&inbound, problem, received_at)
            })
            .await?;
        Ok(Handled {
            ack: encode_ack(&inbound, &received.ack),
            received,
        })
    }

    /// A frame the codec could not deliver (larger than the maximum, or cut
    /// off): stored as rejected with the bytes we kept, answered AR.
    pub async fn handle_bad_frame(
        &self,
        error: &MllpError,
        peer: Option<String>,
        listener: Option<&'static str>,
    ) -> Result<Handled, StoreError> {
        let received_at = self.clock.now();
        let head = match error {
            MllpError::TooLarge { head, .. } | MllpError::Incomplete { head, .. } => head,
        };
        let text = String::from_utf8_lossy(head);
        let header = Header::salvage(&text);
        let reason = match error {
            MllpError::TooLarge { size, max_len, .. } => format!(
                "the message is {size} bytes, more than the maximum of {max_len} \
                 (mllp.max_message_bytes); only its first {} bytes were kept",
                head.len()
            ),
            MllpError::Incomplete { size, .. } => {
                format!("the MLLP frame was cut off after {size} bytes")
            }
        };
        let error = Hl7Error::Application {
            location: None,
            reason: reason.clone(),
            code: ErrorCode::ApplicationInternalError,
            reject: true,
        };
        let message = InboundMessage {
            raw: head,
            peer,
            listener,
            received_at,
            sending_app: header
                .as_ref()
                .map(|h| h.sending_application.namespace_id.clone())
                .unwrap_or_default(),
            sending_facility: header
                .as_ref()
                .map(|h| h.sending_facility.namespace_id.clone())
                .unwrap_or_default(),
            // Never deduplicated: a resend of the whole message must be
            // looked at afresh.
            control_id: String::new(),
            message_type: header.as_ref().map(message_type).unwrap_or_default(),
            deduplicate: false,
            notes: None,
            parsed: Err(IntakeProblem {
                status: MessageStatus::Rejected,
                kind: ProblemKind::Unreadable,
                location: None,
                reason,
            }),
        };
        let control_id = self.next_ack_id(received_at);
        let timestamp = hl7_timestamp(received_at);
        let received = self
            .store
            .receive_hl7(&message, |_| {
                build_ack(header.as_ref(), Some(&error), &control_id, &timestamp).into_string()
            })
            .await?;
        let ack = received.ack.as_bytes().to_vec();
        Ok(Handled { ack, received })
    }

    /// The AR for a message refused before it was read (its sender may
    /// not send for its MSH-4): nothing is stored, so no store call.
    pub fn refusal_ack(&self, header: Option<&Header>, reason: &str) -> Vec<u8> {
        let now = self.clock.now();
        let error = Hl7Error::Application {
            location: Some(ErrorLocation {
                segment: "MSH".into(),
                occurrence: 1,
                field: Some(4),
                ..ErrorLocation::default()
            }),
            reason: reason.to_string(),
            code: ErrorCode::ApplicationInternalError,
            reject: true,
        };
        build_ack(
            header,
            Some(&error),
            &self.next_ack_id(now),
            &hl7_timestamp(now),
        )
        .to_bytes()
    }

    /// Applies a stored message again, parsed anew from its raw bytes.
    pub async fn reprocess(
        &self,
        message_id: i64,
        actor: &str,
    ) -> Result<StoredMessage, StoreError> {
        let stored = self
            .store
            .hl7_message(message_id)
            .await?
            .ok_or(StoreError::NotFound("message"))?;
        let raw = stored.raw.unwrap_or_default();
        let now = self.clock.now();
        let inbound = enroll_hl7::process(&raw, &self.mapping);
        let message = inbound_message(&inbound, &raw, stored.peer, stored.received_at);
        self.store
            .reprocess_hl7(message_id, &message, actor, now, |problem| {
                self.ack_text(&inbound, problem, now)
            })
            .await
    }

    fn next_ack_id(&self, now: Timestamp) -> String {
        let n = self.ack_sequence.fetch_add(1, Ordering::Relaxed);
        // Hex keeps it within the 20 characters HL7 2.3 allows for MSH-10.
        format!("ENR{:x}{:05x}", now.as_millisecond(), n % 0x10_0000)
    }

    /// The ACK for the store's verdict: the parser's own error when it had
    /// one (it knows the exact place and code), else the store's problem.
    fn ack_text(
        &self,
        inbound: &Inbound,
        problem: Option<&IntakeProblem>,
        now: Timestamp,
    ) -> String {
        let store_error;
        let error = match (problem, &inbound.result) {
            (None, _) => None,
            (Some(_), Err(parse_error)) => Some(parse_error),
            (Some(problem), Ok(_)) => {
                store_error = Hl7Error::Application {
                    location: problem.location.as_deref().and_then(parse_location),
                    reason: problem.reason.clone(),
                    code: error_code(problem.kind),
                    reject: false,
                };
                Some(&store_error)
            }
        };
        build_ack(
            inbound.header.as_ref(),
            error,
            &self.next_ack_id(now),
            &hl7_timestamp(now),
        )
        .into_string()
    }
}

/// The ERR-3 code for a problem the store found (the parser's own errors
/// carry theirs).
fn error_code(kind: ProblemKind) -> ErrorCode {
    match kind {
        ProblemKind::UnknownValue => ErrorCode::TableValueNotFound,
        ProblemKind::Storage => ErrorCode::ApplicationInternalError,
        ProblemKind::MissingField | ProblemKind::Parse | ProblemKind::Unreadable => {
            ErrorCode::RequiredFieldMissing
        }
    }
}

/// The ACK in the character set the message declared (MSH-18).
fn encode_ack(inbound: &Inbound, text: &str) -> Vec<u8> {
    inbound.charset.encode(text)
}

/// An HL7 DTM in UTC, e.g. `20261127143000+0000`.
fn hl7_timestamp(at: Timestamp) -> String {
    // A Timestamp formats in UTC.
    at.strftime("%Y%m%d%H%M%S+0000").to_string()
}

fn message_type(header: &Header) -> String {
    if header.trigger_event.is_empty() {
        header.message_type.clone()
    } else {
        format!("{}^{}", header.message_type, header.trigger_event)
    }
}

fn inbound_message<'a>(
    inbound: &Inbound,
    raw: &'a [u8],
    peer: Option<String>,
    received_at: Timestamp,
) -> InboundMessage<'a> {
    let header = inbound.header.as_ref();
    InboundMessage {
        raw,
        peer,
        // Set by the caller that knows it; a reprocessed message keeps
        // the one stored with it.
        listener: None,
        received_at,
        sending_app: header
            .map(|h| h.sending_application.namespace_id.clone())
            .unwrap_or_default(),
        sending_facility: header
            .map(|h| h.sending_facility.namespace_id.clone())
            .unwrap_or_default(),
        control_id: header.map(|h| h.control_id.clone()).unwrap_or_default(),
        message_type: header.map(message_type).unwrap_or_default(),
        deduplicate: !inbound.header_salvaged,
        notes: None,
        // The mapping already made the neutral event the store applies.
        parsed: match &inbound.result {
            Ok(event) => Ok(event.clone()),
            Err(error) => Err(problem_of(error)),
        },
    }
}

fn problem_of(error: &Hl7Error) -> IntakeProblem {
    let status = match error.ack_code() {
        enroll_hl7::AckCode::AR => MessageStatus::Rejected,
        _ => MessageStatus::Error,
    };
    IntakeProblem {
        status,
        kind: ProblemKind::Parse,
        location: error.location().map(|l| location_text(&l)),
        reason: error.to_string(),
    }
}

/// `PID-7`, `PID-13(2).4`, or just the segment.
fn location_text(location: &ErrorLocation) -> String {
    let mut text = location.segment.clone();
    if let Some(field) = location.field {
        text.push_str(&format!("-{field}"));
        if let Some(repetition) = location.repetition.filter(|&r| r > 1) {
            text.push_str(&format!("({repetition})"));
        }
        if let Some(component) = location.component {
            text.push_str(&format!(".{component}"));
        }
    }
    text
}

/// The inverse of [`location_text`] for the simple `SEG-n` the store uses.
fn parse_location(text: &str) -> Option<ErrorLocation> {
    let (segment, field) = text.split_once('-')?;
    Some(ErrorLocation {
        segment: segment.to_string(),
        occurrence: 1,
        field: field.parse().ok(),
        ..ErrorLocation::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_read_as_staff_write_them() {
        let location = ErrorLocation {
            segment: "PID".into(),
            occurrence: 1,
            field: Some(13),
            repetition: Some(2),
            component: Some(4),
        };
        assert_eq!(location_text(&location), "PID-13(2).4");
        let parsed = parse_location("MSH-4").unwrap();
        assert_eq!((parsed.segment.as_str(), parsed.field), ("MSH", Some(4)));
    }

    #[test]
    fn ack_timestamps_are_hl7_dtm_in_utc() {
        let at: Timestamp = "2026-11-27T14:30:05Z".parse().unwrap();
        assert_eq!(hl7_timestamp(at), "20261127143005+0000");
    }
}
