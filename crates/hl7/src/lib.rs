//! HL7 v2 for Enroll (DESIGN.md section 3): everything between the bytes
//! an EHR sends over MLLP and the events the enrollment rules act on, with
//! no I/O of its own.
//!
//! - [`parse`]: MSH-18 character sets, and a zero-copy parser with a path
//!   API (`msg.get("PID-5-2")`); why it is our own is said there.
//! - [`event`]: ADT^A01/A04/A08/A28/A31/A40 and SIU^S12-S15 to the neutral
//!   [`enroll_core::IntakeEvent`] that every source of patient data produces.
//! - [`ack`]: the AA/AE/AR acknowledgement with its ERR segment.
//! - [`mllp`]: the MLLP codec for tokio-util's `Framed`.
//!
//! A listener does, per frame:
//!
//! ```
//! use enroll_hl7::{MappingOptions, process};
//!
//! let frame = b"MSH|^~\\&|EHR|NORTH|ENROLL|PORTAL|20260905120000||ADT^A04^ADT_A01|MSG1|P|2.5.1\r\
//! PID|1||12345^^^NORTH^MR||Doe^Jane||19800101|F|||1 Main St^^Springfield^IL^62701||^NET^Internet^jane@example.com\r";
//! let inbound = process(frame, &MappingOptions::default());
//! // The practice is chosen by MSH-4; store the raw message and the event, then:
//! let ack = inbound.ack("ACK0001", "20260905120001");
//! assert!(ack.as_str().contains("MSA|AA|MSG1"));
//! let event = inbound.result.unwrap();
//! assert_eq!(event.patient().mrn, "12345");
//! ```

pub mod ack;
mod error;
pub mod event;
pub mod mllp;
pub mod parse;

pub use ack::{Ack, build_ack};
pub use error::{AckCode, ErrorCode, ErrorLocation, Hl7Error};
pub use event::{BirthSexSource, Header, HierarchicDesignator, MappingOptions, map_event};
pub use mllp::{MllpCodec, MllpError};
pub use parse::{Charset, Delimiters, Message, ParseError, Path};

use enroll_core::IntakeEvent;

/// One inbound message, decoded, parsed and mapped.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// Its MSH, when it could be read (also for most messages that do not
    /// parse as a whole, so that their AR echoes MSH-10).
    pub header: Option<Header>,
    /// The event, or why there is none.
    pub result: Result<IntakeEvent, Hl7Error>,
    /// The character set the bytes were read with.
    pub charset: Charset,
    /// The bytes were not valid UTF-8 where UTF-8 was declared or assumed
    /// and were read as Latin-1.
    pub latin1_fallback: bool,
    /// MSH-18 named a character set we do not know (read as UTF-8).
    pub unknown_charset: bool,
    /// The header was read field by field because MSH-2 was unusable
    /// ([`Header::from_bare_fields`]): its MSH-10 is echoed in the AR but
    /// must not deduplicate, so a corrected resend is read afresh.
    pub header_salvaged: bool,
}

impl Inbound {
    /// The acknowledgement for this message: AA when it mapped, else AE or
    /// AR with an ERR segment. To answer AE for a failure of our own after
    /// mapping (storage), use [`build_ack`] with [`Hl7Error::Internal`].
    pub fn ack(&self, control_id: &str, timestamp: &str) -> Ack {
        build_ack(
            self.header.as_ref(),
            self.result.as_ref().err(),
            control_id,
            timestamp,
        )
    }
}

/// Decode, parse and map one message (the bytes of one MLLP frame).
/// Never panics; every failure is in [`Inbound::result`].
pub fn process(bytes: &[u8], options: &MappingOptions) -> Inbound {
    let decoded = parse::decode(bytes);
    let (header, header_salvaged, result) = match Message::parse(&decoded.text) {
        Ok(msg) => {
            let header = Header::from_message(&msg);
            let result = map_event(&msg, &header, options);
            (Some(header), false, result)
        }
        Err(e) => {
            let salvaged = Header::salvage_how(&decoded.text);
            let by_fields = salvaged.as_ref().is_some_and(|(_, by_fields)| *by_fields);
            let header = salvaged.map(|(header, _)| header);
            (header, by_fields, Err(Hl7Error::Parse(e)))
        }
    };
    Inbound {
        header,
        result,
        charset: decoded.charset,
        latin1_fallback: decoded.latin1_fallback,
        unknown_charset: decoded.unknown_charset,
        header_salvaged,
    }
}
