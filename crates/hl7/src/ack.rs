//! Acknowledgements (original mode): MSH + MSA, and ERR for AE/AR.
//!
//! The ACK's MSH swaps sending and receiving application and facility, uses
//! the inbound message's delimiters, version, processing id and character
//! set, and `ACK^<event>^ACK` as its type (`ACK^<event>` for v2.3, whose
//! MSH-9 has no structure). MSA-2 echoes the inbound MSH-10. The ERR
//! segment gives the location and the HL7 error code (table 0357) in the
//! v2.5+ form (ERR-2 location, ERR-3 code, ERR-4 severity, ERR-8 message),
//! or in ERR-1 (ELD) for 2.3 and 2.4. All text is escaped. The time and the
//! ACK's own control id are passed in: nothing here reads a clock.

use crate::error::{AckCode, ErrorLocation, Hl7Error};
use crate::event::{Header, HierarchicDesignator};
use crate::parse::{Charset, Delimiters, escape};

/// Version written when the inbound message gave none we can echo.
pub const DEFAULT_VERSION: &str = "2.5.1";

/// A built acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    text: String,
    code: AckCode,
    charset: Charset,
}

impl Ack {
    /// MSA-1.
    pub fn code(&self) -> AckCode {
        self.code
    }

    /// The message text, segments ended by `\r`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The message text.
    pub fn into_string(self) -> String {
        self.text
    }

    /// The bytes to send, in the character set the inbound MSH-18 declared
    /// (UTF-8 when none or unknown).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.charset.encode(&self.text)
    }
}

/// Build the ACK for an inbound message.
///
/// - `inbound`: its header; `None` when not even MSH could be read (the
///   ACK then uses `|^~\&`, version [`DEFAULT_VERSION`] and an empty MSA-2).
/// - `error`: `None` for AA; otherwise the error decides AE or AR
///   ([`Hl7Error::ack_code`]) and fills MSA-3 and ERR.
/// - `control_id`: MSH-10 of the ACK itself (a new id made by the caller).
/// - `timestamp`: MSH-7 of the ACK, an HL7 DTM made by the caller, e.g.
///   `20260905120001-0500`.
pub fn build_ack(
    inbound: Option<&Header>,
    error: Option<&Hl7Error>,
    control_id: &str,
    timestamp: &str,
) -> Ack {
    let d = inbound.map_or(Delimiters::STANDARD, |h| h.delimiters);
    let esc = |t: &str| escape(t, &d).into_owned();
    let f = char::from(d.field).to_string();
    let c = char::from(d.component).to_string();
    let s = char::from(d.subcomponent).to_string();
    let empty = HierarchicDesignator::default();
    let version = inbound
        .map(|h| h.version.as_str())
        .filter(|v| !v.is_empty())
        .unwrap_or(DEFAULT_VERSION);
    let minor = minor_version(version);
    let trigger = inbound.map_or("", |h| h.trigger_event.as_str());
    // MSH-9.3 (message structure) exists from 2.3.1 on.
    let has_structure = !(version.trim() == "2.3" || minor.is_some_and(|m| m < 3));
    let message_type = match inbound {
        None => "ACK".to_string(),
        Some(_) if has_structure => format!("ACK{c}{}{c}ACK", esc(trigger)),
        Some(_) => format!("ACK{c}{}", esc(trigger)),
    };
    let processing = inbound
        .map(|h| h.processing_id.as_str())
        .filter(|p| !p.is_empty())
        .unwrap_or("P");
    let charset_label = inbound.map_or("", |h| h.charset.as_str());

    let hd = |h: &HierarchicDesignator| {
        let parts = [&h.namespace_id, &h.universal_id, &h.universal_id_type].map(|p| esc(p));
        trim_join(&parts, &c)
    };
    let mut msh = vec![
        "MSH".to_string(),
        d.msh2(),
        hd(inbound.map_or(&empty, |h| &h.receiving_application)),
        hd(inbound.map_or(&empty, |h| &h.receiving_facility)),
        hd(inbound.map_or(&empty, |h| &h.sending_application)),
        hd(inbound.map_or(&empty, |h| &h.sending_facility)),
        esc(timestamp),
        String::new(),
        message_type,
        esc(control_id),
        esc(processing),
        esc(version),
    ];
    if !charset_label.is_empty() {
        msh.resize(17, String::new());
        msh.push(esc(charset_label));
    }

    let code = error.map_or(AckCode::AA, Hl7Error::ack_code);
    let message = error.map(|e| e.to_string()).unwrap_or_default();
    let msa = [
        "MSA".to_string(),
        code.as_str().to_string(),
        esc(inbound.map_or("", |h| h.control_id.as_str())),
        esc(&truncate(&message, 80)),
    ];
    let mut segments = vec![trim_join(&msh, &f), trim_join(&msa, &f)];

    if let Some(error) = error {
        let hl7 = error.error_code();
        let location = error.location();
        let err = if minor.is_some_and(|m| m < 5) {
            // ERR-1 (ELD): segment^sequence^field^code&text&HL70357.
            let loc = location.unwrap_or_default();
            let code = [
                hl7.code().to_string(),
                esc(hl7.text()),
                "HL70357".to_string(),
            ]
            .join(&s);
            let eld = [
                esc(&loc.segment),
                number(loc.occurrence),
                loc.field.map(number).unwrap_or_default(),
                code,
            ];
            vec!["ERR".to_string(), eld.join(&c)]
        } else {
            let erl = location.map(|l| erl(&l, &c, &esc)).unwrap_or_default();
            let code = [
                hl7.code().to_string(),
                esc(hl7.text()),
                "HL70357".to_string(),
            ]
            .join(&c);
            vec![
                "ERR".to_string(),
                String::new(),
                erl,
                code,
                "E".to_string(),
                String::new(),
                String::new(),
                String::new(),
                esc(&message),
            ]
        };
        segments.push(trim_join(&err, &f));
    }

    let mut text = segments.join("\r");
    text.push('\r');
    Ack {
        text,
        code,
        charset: Charset::from_msh18(charset_label).unwrap_or(Charset::Utf8),
    }
}

/// ERR-2 (ERL): segment^sequence^field^repetition^component.
fn erl(l: &ErrorLocation, c: &str, esc: &dyn Fn(&str) -> String) -> String {
    let repetition = l.repetition.or(l.component.map(|_| 1));
    let parts = [
        esc(&l.segment),
        number(l.occurrence),
        l.field.map(number).unwrap_or_default(),
        repetition.map(number).unwrap_or_default(),
        l.component.map(number).unwrap_or_default(),
    ];
    trim_join(&parts, c)
}

fn number(n: usize) -> String {
    if n == 0 { String::new() } else { n.to_string() }
}

/// Join, leaving out trailing empty parts.
fn trim_join(parts: &[String], sep: &str) -> String {
    let used = parts
        .iter()
        .rposition(|p| !p.is_empty())
        .map_or(0, |i| i + 1);
    parts[..used].join(sep)
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

/// The minor version of `2.x[.y]`.
fn minor_version(version: &str) -> Option<u8> {
    let mut parts = version.trim().split('.');
    (parts.next()? == "2").then_some(())?;
    parts.next()?.parse().ok()
}
