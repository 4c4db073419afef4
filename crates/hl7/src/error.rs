//! Errors as values, each knowing the acknowledgement it leads to.

use crate::parse::ParseError;
use std::fmt;

/// MSA-1 in original acknowledgement mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckCode {
    /// Application accept.
    AA,
    /// Application error: the message was understood but cannot be applied
    /// (a bad field, a missing segment, an internal failure).
    AE,
    /// Application reject: the message cannot be parsed, or its type,
    /// event or version is not supported.
    AR,
}

impl AckCode {
    /// `AA`, `AE` or `AR`.
    pub fn as_str(&self) -> &'static str {
        match self {
            AckCode::AA => "AA",
            AckCode::AE => "AE",
            AckCode::AR => "AR",
        }
    }
}

impl fmt::Display for AckCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// HL7 table 0357, message error condition codes (ERR-3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 100: segments out of order or a required segment missing.
    SegmentSequenceError,
    /// 101: a required field is missing.
    RequiredFieldMissing,
    /// 102: a field's value does not fit its data type.
    DataTypeError,
    /// 103: a value is not in its table.
    TableValueNotFound,
    /// 200: the message type is not supported.
    UnsupportedMessageType,
    /// 201: the event code is not supported.
    UnsupportedEventCode,
    /// 202: the processing id is not supported.
    UnsupportedProcessingId,
    /// 203: the version is not supported.
    UnsupportedVersionId,
    /// 204: unknown key identifier (e.g. merging a patient we do not know).
    UnknownKeyIdentifier,
    /// 205: duplicate key identifier.
    DuplicateKeyIdentifier,
    /// 206: application record locked.
    ApplicationRecordLocked,
    /// 207: application internal error.
    ApplicationInternalError,
}

impl ErrorCode {
    /// The numeric code, e.g. 102.
    pub fn code(&self) -> u16 {
        match self {
            ErrorCode::SegmentSequenceError => 100,
            ErrorCode::RequiredFieldMissing => 101,
            ErrorCode::DataTypeError => 102,
            ErrorCode::TableValueNotFound => 103,
            ErrorCode::UnsupportedMessageType => 200,
            ErrorCode::UnsupportedEventCode => 201,
            ErrorCode::UnsupportedProcessingId => 202,
            ErrorCode::UnsupportedVersionId => 203,
            ErrorCode::UnknownKeyIdentifier => 204,
            ErrorCode::DuplicateKeyIdentifier => 205,
            ErrorCode::ApplicationRecordLocked => 206,
            ErrorCode::ApplicationInternalError => 207,
        }
    }

    /// The text of table 0357, e.g. "Data type error".
    pub fn text(&self) -> &'static str {
        match self {
            ErrorCode::SegmentSequenceError => "Segment sequence error",
            ErrorCode::RequiredFieldMissing => "Required field missing",
            ErrorCode::DataTypeError => "Data type error",
            ErrorCode::TableValueNotFound => "Table value not found",
            ErrorCode::UnsupportedMessageType => "Unsupported message type",
            ErrorCode::UnsupportedEventCode => "Unsupported event code",
            ErrorCode::UnsupportedProcessingId => "Unsupported processing id",
            ErrorCode::UnsupportedVersionId => "Unsupported version id",
            ErrorCode::UnknownKeyIdentifier => "Unknown key identifier",
            ErrorCode::DuplicateKeyIdentifier => "Duplicate key identifier",
            ErrorCode::ApplicationRecordLocked => "Application record locked",
            ErrorCode::ApplicationInternalError => "Application internal error",
        }
    }
}

/// Where an error is, as ERR-2 (v2.5+) or ERR-1 (older) gives it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ErrorLocation {
    /// Segment name, e.g. `PID` (empty when the segment has no valid name).
    pub segment: String,
    /// Which segment of that name (1 = the first).
    pub occurrence: usize,
    /// Field number.
    pub field: Option<usize>,
    /// Field repetition.
    pub repetition: Option<usize>,
    /// Component.
    pub component: Option<usize>,
}

/// Why a message was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Hl7Error {
    /// The message cannot be parsed (AR).
    #[error("cannot parse: {0}")]
    Parse(#[from] ParseError),
    /// MSH-9 names a message type we do not take (AR, 200).
    #[error("unsupported message type {message_type:?}")]
    UnsupportedMessageType {
        /// MSH-9.1.
        message_type: String,
        /// MSH-9.2.
        trigger_event: String,
    },
    /// A message type we take with an event we do not (AR, 201).
    #[error("unsupported event {message_type}^{trigger_event}")]
    UnsupportedEvent {
        /// MSH-9.1.
        message_type: String,
        /// MSH-9.2.
        trigger_event: String,
    },
    /// MSH-12 is not a version from 2.3 to 2.8 (AR, 203).
    #[error("unsupported HL7 version {version:?} (2.3 to 2.8 are supported)")]
    UnsupportedVersion {
        /// MSH-12.1 as sent.
        version: String,
    },
    /// A segment the message type requires is missing (AE, 100).
    #[error("the {segment} segment is missing")]
    MissingSegment {
        /// Its name.
        segment: &'static str,
    },
    /// A field is missing or not valid. In MSH the message is rejected (AR);
    /// elsewhere it is an application error (AE).
    #[error("{segment}-{field}: {reason}")]
    Field {
        /// Segment name, e.g. `PID`.
        segment: &'static str,
        /// Which segment of that name (1 = the first).
        occurrence: usize,
        /// Field number, e.g. 7.
        field: usize,
        /// Repetition, when one is at fault.
        repetition: Option<usize>,
        /// Component, when one is at fault.
        component: Option<usize>,
        /// What is wrong, e.g. "not a date".
        reason: &'static str,
        /// The HL7 error code (101 missing, 102 data type, ...).
        code: ErrorCode,
    },
    /// The message is sound but the receiving application cannot apply it
    /// (e.g. MSH-4 names a facility no practice is mapped to): AE. Made by
    /// the caller.
    #[error("{reason}")]
    Application {
        /// Where, e.g. MSH-4.
        location: Option<ErrorLocation>,
        /// What is wrong and what to do (no patient data).
        reason: String,
        /// The HL7 error code.
        code: ErrorCode,
        /// AR instead of AE: the message was not read at all (e.g. its
        /// frame was larger than the maximum).
        reject: bool,
    },
    /// Our side failed (storage, ...): AE with 207. Made by the caller.
    #[error("application error: {reason}")]
    Internal {
        /// What failed, for the sender's operator (no patient data).
        reason: String,
    },
}

impl Hl7Error {
    /// A field error at the first segment of its name, no component.
    pub fn field(
        segment: &'static str,
        field: usize,
        reason: &'static str,
        code: ErrorCode,
    ) -> Hl7Error {
        Hl7Error::Field {
            segment,
            occurrence: 1,
            field,
            repetition: None,
            component: None,
            reason,
            code,
        }
    }

    /// The acknowledgement code this error gets.
    pub fn ack_code(&self) -> AckCode {
        match self {
            Hl7Error::Parse(_)
            | Hl7Error::UnsupportedMessageType { .. }
            | Hl7Error::UnsupportedEvent { .. }
            | Hl7Error::UnsupportedVersion { .. } => AckCode::AR,
            Hl7Error::Field { segment, .. } if *segment == "MSH" => AckCode::AR,
            Hl7Error::Application { reject: true, .. } => AckCode::AR,
            Hl7Error::Field { .. }
            | Hl7Error::MissingSegment { .. }
            | Hl7Error::Application { .. }
            | Hl7Error::Internal { .. } => AckCode::AE,
        }
    }

    /// The HL7 error code (table 0357) for the ERR segment.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            Hl7Error::Parse(e) if e.segment == "MSH" && e.field.is_some() => {
                ErrorCode::DataTypeError
            }
            Hl7Error::Parse(_) => ErrorCode::SegmentSequenceError,
            Hl7Error::UnsupportedMessageType { .. } => ErrorCode::UnsupportedMessageType,
            Hl7Error::UnsupportedEvent { .. } => ErrorCode::UnsupportedEventCode,
            Hl7Error::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersionId,
            Hl7Error::MissingSegment { .. } => ErrorCode::SegmentSequenceError,
            Hl7Error::Field { code, .. } | Hl7Error::Application { code, .. } => *code,
            Hl7Error::Internal { .. } => ErrorCode::ApplicationInternalError,
        }
    }

    /// Where the error is, when it has a place in the message.
    pub fn location(&self) -> Option<ErrorLocation> {
        let at = |segment: &str, field: usize| ErrorLocation {
            segment: segment.to_string(),
            occurrence: 1,
            field: Some(field),
            ..ErrorLocation::default()
        };
        match self {
            Hl7Error::Parse(e) if e.line > 0 && !e.segment.is_empty() => Some(ErrorLocation {
                segment: e.segment.clone(),
                occurrence: e.occurrence,
                field: e.field,
                ..ErrorLocation::default()
            }),
            Hl7Error::Parse(_) | Hl7Error::Internal { .. } => None,
            Hl7Error::Application { location, .. } => location.clone(),
            Hl7Error::UnsupportedMessageType { .. } | Hl7Error::UnsupportedEvent { .. } => {
                Some(at("MSH", 9))
            }
            Hl7Error::UnsupportedVersion { .. } => Some(at("MSH", 12)),
            Hl7Error::MissingSegment { segment } => Some(ErrorLocation {
                segment: segment.to_string(),
                occurrence: 1,
                ..ErrorLocation::default()
            }),
            Hl7Error::Field {
                segment,
                occurrence,
                field,
                repetition,
                component,
                ..
            } => Some(ErrorLocation {
                segment: segment.to_string(),
                occurrence: *occurrence,
                field: Some(*field),
                repetition: *repetition,
                component: *component,
            }),
        }
    }
}
