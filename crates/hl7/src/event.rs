//! From a parsed message to the neutral event Enroll acts on
//! ([`enroll_core::IntakeEvent`], DESIGN.md section 3).
//!
//! | message | event |
//! | --- | --- |
//! | ADT^A04, ADT^A28 (and A01 without a visit number) | [`IntakeEvent::Register`], updating a known MRN ([`IfKnown::Update`](enroll_core::IfKnown::Update)) |
//! | ADT^A08, ADT^A31 | [`IntakeEvent::Update`] |
//! | ADT^A01, ADT^A04 with PV1-19 | [`IntakeEvent::Encounter`] (carries the patient too) |
//! | ADT^A40 | [`IntakeEvent::Merge`] (PID = surviving, MRG-1 = merged) |
//! | SIU^S12 | [`IntakeEvent::Appointment`], [`AppointmentStatus::Booked`] |
//! | SIU^S13, S14, S15 | [`IntakeEvent::Appointment`], rescheduled, modified, cancelled (recorded, no trigger) |
//!
//! Anything else is an [`Hl7Error`] that leads to AR; a bad field (PID-7
//! that is not a date, no patient identifier) leads to AE.

use crate::error::{ErrorCode, Hl7Error};
use crate::parse::{Component, Delimiters, Field, Message, Repetition, Segment, is_delimiter};
use enroll_core::{
    AppointmentStatus, Demographics, Field as DemographicField, IntakeEvent, PatientChange,
};
use jiff::civil::Date;
use std::borrow::Cow;

/// Where birth sex comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BirthSexSource {
    /// An OBX with LOINC 76689-9 (sex assigned at birth) when the message
    /// has one with a value, else PID-8 (administrative sex).
    #[default]
    ObxThenPid8,
    /// PID-8 only.
    Pid8Only,
}

/// Per-sender (per-practice) choices for the mapping.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MappingOptions {
    /// Where birth sex comes from.
    pub birth_sex_source: BirthSexSource,
    /// When set, the MRN is the PID-3 (MRG-1) identifier whose assigning
    /// authority (CX-4, namespace or universal id, any case) is this one, and
    /// a message without one is an error (AE). When not set: the first
    /// identifier of type MR (then MRN, PI, PT), else the first identifier
    /// that is not a social security number.
    pub mrn_assigning_authority: Option<String>,
}

/// An HD (hierarchic designator): MSH-3 to MSH-6, CX-4.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HierarchicDesignator {
    /// HD-1, e.g. `NORTHCLINIC`.
    pub namespace_id: String,
    /// HD-2, e.g. an OID.
    pub universal_id: String,
    /// HD-3, e.g. `ISO`.
    pub universal_id_type: String,
}

impl HierarchicDesignator {
    fn from_field(field: Option<Field<'_>>) -> Self {
        let rep = field.and_then(|f| f.repetition(1));
        let part = |n| owned(rep.and_then(|r| r.text_of(n))).unwrap_or_default();
        HierarchicDesignator {
            namespace_id: part(1),
            universal_id: part(2),
            universal_id_type: part(3),
        }
    }
}

/// The facts of MSH that routing, storage and the ACK need. Read leniently:
/// a missing field is an empty string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// MSH-3.
    pub sending_application: HierarchicDesignator,
    /// MSH-4: chooses the practice.
    pub sending_facility: HierarchicDesignator,
    /// MSH-5.
    pub receiving_application: HierarchicDesignator,
    /// MSH-6.
    pub receiving_facility: HierarchicDesignator,
    /// MSH-7.1, the sender's timestamp as sent (HL7 DTM).
    pub timestamp: String,
    /// MSH-9.1, e.g. `ADT`.
    pub message_type: String,
    /// MSH-9.2 (EVN-1 when MSH-9.2 is empty), e.g. `A04`.
    pub trigger_event: String,
    /// MSH-9.3, e.g. `ADT_A01` (empty before 2.3.1).
    pub message_structure: String,
    /// MSH-10, the sender's message control id.
    pub control_id: String,
    /// MSH-11.1, `P`, `T` or `D`.
    pub processing_id: String,
    /// MSH-12.1, e.g. `2.5.1`.
    pub version: String,
    /// MSH-18 (first repetition) as sent.
    pub charset: String,
    /// MSH-1 and MSH-2.
    pub delimiters: Delimiters,
}

impl Header {
    /// Read MSH. Never fails.
    pub fn from_message(msg: &Message<'_>) -> Header {
        let msh = msg.segment("MSH").map(|s| s.field_table());
        let field = |n| msh.as_ref().and_then(|s| s.field(n));
        let text = |n, c| owned(msh.as_ref().and_then(|s| s.text(n, c))).unwrap_or_default();
        let mut trigger_event = text(9, 2);
        if trigger_event.is_empty() {
            trigger_event =
                owned(msg.segment("EVN").and_then(|s| s.text(1, 1))).unwrap_or_default();
        }
        Header {
            sending_application: HierarchicDesignator::from_field(field(3)),
            sending_facility: HierarchicDesignator::from_field(field(4)),
            receiving_application: HierarchicDesignator::from_field(field(5)),
            receiving_facility: HierarchicDesignator::from_field(field(6)),
            timestamp: text(7, 1),
            message_type: text(9, 1),
            trigger_event,
            message_structure: text(9, 3),
            control_id: text(10, 0),
            processing_id: text(11, 1),
            version: text(12, 1),
            charset: field(18)
                .and_then(|f| f.repetition(1))
                .and_then(|r| r.text())
                .map(Cow::into_owned)
                .unwrap_or_default(),
            delimiters: msg.delimiters(),
        }
    }

    /// Read the MSH of a message that does not parse as a whole (so that
    /// its AR can still swap sender and receiver and echo MSH-10). `None`
    /// when even the first line is not a usable MSH.
    pub fn salvage(text: &str) -> Option<Header> {
        Header::salvage_how(text).map(|(header, _)| header)
    }

    /// [`Header::salvage`], and whether the fields had to be read one by
    /// one ([`Header::from_bare_fields`]).
    pub(crate) fn salvage_how(text: &str) -> Option<(Header, bool)> {
        let text = text.trim_start_matches(|c: char| {
            c.is_ascii_whitespace() || c == '\u{b}' || c == '\u{feff}'
        });
        let first = text.split(['\r', '\n']).next()?;
        match Message::parse(first) {
            Ok(m) => Some((Header::from_message(&m), false)),
            Err(_) => Header::from_bare_fields(first).map(|h| (h, true)),
        }
    }

    /// MSH read field by field when MSH-2 is unusable (a repeated or
    /// missing encoding character), so that the AR can still swap sender
    /// and receiver and echo MSH-10 for the sender to match. Only MSH-1 is
    /// trusted: values are taken as sent (no escapes), their first
    /// component split at MSH-2's first character when it can be a
    /// delimiter. `None` without a usable MSH-1.
    pub fn from_bare_fields(line: &str) -> Option<Header> {
        let rest = line.strip_prefix("MSH")?;
        let field = *rest.as_bytes().first()?;
        if !is_delimiter(field) {
            return None;
        }
        // MSH-1 is the separator itself: after it come MSH-2, MSH-3, ...
        // (it is ASCII, so slicing after it keeps to a char boundary).
        let fields: Vec<&str> = rest[1..].split(char::from(field)).collect();
        let msh = |n: usize| fields.get(n - 2).copied().unwrap_or_default();
        let component = msh(2)
            .bytes()
            .next()
            .filter(|&b| is_delimiter(b) && b != field)
            .map_or('^', char::from);
        let part = |n: usize, c: usize| {
            msh(n)
                .split(component)
                .nth(c - 1)
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        let hd = |n: usize| HierarchicDesignator {
            namespace_id: part(n, 1),
            ..HierarchicDesignator::default()
        };
        let standard = Delimiters::STANDARD;
        let clashes = [
            standard.component,
            standard.repetition,
            standard.escape,
            standard.subcomponent,
        ]
        .contains(&field);
        Some(Header {
            sending_application: hd(3),
            sending_facility: hd(4),
            receiving_application: hd(5),
            receiving_facility: hd(6),
            timestamp: part(7, 1),
            message_type: part(9, 1),
            trigger_event: part(9, 2),
            message_structure: part(9, 3),
            control_id: msh(10).trim().to_string(),
            processing_id: part(11, 1),
            version: part(12, 1),
            // Without MSH-2 the character set cannot be trusted either: the
            // AR goes out in UTF-8.
            charset: String::new(),
            // The ACK is written with MSH-1 kept and standard encoding
            // characters (it declares its own MSH-2).
            delimiters: if clashes {
                standard
            } else {
                Delimiters { field, ..standard }
            },
        })
    }
}

/// True for 2.3 to 2.8.x (`2.3`, `2.3.1`, `2.5.1`, `2.8.2`, ...).
pub fn is_supported_version(version: &str) -> bool {
    let mut parts = version.trim().split('.');
    let major = parts.next();
    let minor = parts.next().and_then(|m| m.parse::<u8>().ok());
    major == Some("2")
        && matches!(minor, Some(3..=8))
        && parts.all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

enum Kind {
    Upsert,
    Update,
    EncounterIfVisit,
    Merge,
    Appointment(AppointmentStatus),
}

/// Map a parsed message to its event. `header` is
/// [`Header::from_message`] of the same message.
pub fn map_event(
    msg: &Message<'_>,
    header: &Header,
    options: &MappingOptions,
) -> Result<IntakeEvent, Hl7Error> {
    let event = map_values(msg, header, options)?;
    match nul_field(msg, &event) {
        None => Ok(event),
        Some((segment, field)) => Err(Hl7Error::field(
            segment,
            field,
            "holds a NUL character (0x00, sent as a byte or as \\X00\\), which HL7 text \
             may not hold and Enroll cannot store; send the value without it",
            ErrorCode::DataTypeError,
        )),
    }
}

/// Where a NUL is in a value the event carries: the first of the fields
/// that value may come from whose text holds one (else the first field).
/// Only values Enroll stores are looked at; a NUL elsewhere harms nothing.
fn nul_field(msg: &Message<'_>, event: &IntakeEvent) -> Option<(&'static str, usize)> {
    type Places = &'static [(&'static str, usize)];
    let patient = event.patient();
    let d = &patient.sent;
    let mut values: Vec<(Option<&str>, Places)> = vec![
        (Some(patient.mrn.as_str()), &[("PID", 3)]),
        (patient.assigning_authority.as_deref(), &[("PID", 3)]),
        (d.last_name.as_deref(), &[("PID", 5)]),
        (d.first_name.as_deref(), &[("PID", 5)]),
        (d.date_of_birth.as_deref(), &[("PID", 7)]),
        (d.birth_sex.as_deref(), &[("OBX", 5), ("PID", 8)]),
        (d.zip.as_deref(), &[("PID", 11)]),
        (d.email.as_deref(), &[("PID", 40), ("PID", 13)]),
        (d.cell_phone.as_deref(), &[("PID", 40), ("PID", 13)]),
        (patient.preferred_language.as_deref(), &[("PID", 15)]),
        // PID-29 is read as a date (a NUL in it is "not a date").
    ];
    let more: [(Option<&str>, Places); 3] = match event {
        IntakeEvent::Encounter {
            visit_number,
            patient_class,
            admitted_at,
            ..
        } => [
            (Some(visit_number.as_str()), &[("PV1", 19)]),
            (patient_class.as_deref(), &[("PV1", 2)]),
            (admitted_at.as_deref(), &[("PV1", 44)]),
        ],
        IntakeEvent::Merge {
            merged_mrn,
            merged_assigning_authority,
            ..
        } => [
            (Some(merged_mrn.as_str()), &[("MRG", 1)]),
            (merged_assigning_authority.as_deref(), &[("MRG", 1)]),
            (None, &[]),
        ],
        IntakeEvent::Appointment {
            appointment_id,
            starts_at,
            ..
        } => [
            (Some(appointment_id.as_str()), &[("SCH", 2), ("SCH", 1)]),
            (
                starts_at.as_deref(),
                &[("SCH", 11), ("AIS", 4), ("AIG", 8), ("AIL", 6), ("AIP", 6)],
            ),
            (None, &[]),
        ],
        IntakeEvent::Register { .. } | IntakeEvent::Update(_) => [(None, &[]); 3],
    };
    values.extend(more);
    let (_, places) = values
        .into_iter()
        .find(|(value, _)| value.is_some_and(|v| v.contains('\0')))?;
    let holds_nul = |(segment, field): &&(&str, usize)| {
        msg.segments(segment)
            .any(|s| s.field(*field).is_some_and(|f| f.value().contains('\0')))
    };
    places.iter().find(holds_nul).or(places.first()).copied()
}

/// [`map_event`] before the values are checked for what cannot be stored.
fn map_values(
    msg: &Message<'_>,
    header: &Header,
    options: &MappingOptions,
) -> Result<IntakeEvent, Hl7Error> {
    if header.message_type.is_empty() {
        return Err(Hl7Error::field(
            "MSH",
            9,
            "the message type is missing",
            ErrorCode::RequiredFieldMissing,
        ));
    }
    if !is_supported_version(&header.version) {
        return Err(Hl7Error::UnsupportedVersion {
            version: header.version.clone(),
        });
    }
    // Upper case on the stack (codes are three letters).
    let upper = |s: &str| -> [u8; 3] {
        let mut code = [0u8; 3];
        if let Ok(b) = <[u8; 3]>::try_from(s.trim().as_bytes()) {
            code = b.map(|c| c.to_ascii_uppercase());
        }
        code
    };
    let message_type = upper(&header.message_type);
    let trigger = upper(&header.trigger_event);
    let unsupported_event = || Hl7Error::UnsupportedEvent {
        message_type: header.message_type.clone(),
        trigger_event: header.trigger_event.clone(),
    };
    let kind = match &message_type {
        b"ADT" => match &trigger {
            b"A04" | b"A01" => Kind::EncounterIfVisit,
            b"A28" => Kind::Upsert,
            b"A08" | b"A31" => Kind::Update,
            b"A40" => Kind::Merge,
            _ => return Err(unsupported_event()),
        },
        b"SIU" => match &trigger {
            b"S12" => Kind::Appointment(AppointmentStatus::Booked),
            b"S13" => Kind::Appointment(AppointmentStatus::Rescheduled),
            b"S14" => Kind::Appointment(AppointmentStatus::Modified),
            b"S15" => Kind::Appointment(AppointmentStatus::Cancelled),
            _ => return Err(unsupported_event()),
        },
        _ => {
            return Err(Hl7Error::UnsupportedMessageType {
                message_type: header.message_type.clone(),
                trigger_event: header.trigger_event.clone(),
            });
        }
    };
    if header.control_id.is_empty() {
        return Err(Hl7Error::field(
            "MSH",
            10,
            "the message control id is missing",
            ErrorCode::RequiredFieldMissing,
        ));
    }

    let pid = msg
        .segment("PID")
        .ok_or(Hl7Error::MissingSegment { segment: "PID" })?;
    let patient = patient_data(msg, pid, options)?;
    Ok(match kind {
        Kind::Upsert => IntakeEvent::register(patient),
        Kind::Update => IntakeEvent::Update(patient),
        Kind::EncounterIfVisit => {
            let pv1 = msg.segment("PV1");
            match pv1.and_then(|s| s.text(19, 1)) {
                Some(visit) => IntakeEvent::Encounter {
                    patient,
                    visit_number: visit.trim().to_string(),
                    patient_class: owned(pv1.and_then(|s| s.text(2, 1))),
                    admitted_at: owned(pv1.and_then(|s| s.text(44, 1))),
                },
                None => IntakeEvent::register(patient),
            }
        }
        Kind::Merge => {
            let mrg = msg
                .segment("MRG")
                .ok_or(Hl7Error::MissingSegment { segment: "MRG" })?;
            let (merged_mrn, merged_assigning_authority) = mrg
                .field(1)
                .and_then(|f| pick_identifier(f, options))
                .ok_or_else(|| {
                    Hl7Error::field(
                        "MRG",
                        1,
                        "no prior patient identifier",
                        ErrorCode::RequiredFieldMissing,
                    )
                })?;
            IntakeEvent::Merge {
                patient,
                merged_mrn,
                merged_assigning_authority,
            }
        }
        Kind::Appointment(status) => {
            let sch = msg
                .segment("SCH")
                .ok_or(Hl7Error::MissingSegment { segment: "SCH" })?;
            let appointment_id = sch
                .text(2, 1)
                .or_else(|| sch.text(1, 1))
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    Hl7Error::field(
                        "SCH",
                        2,
                        "no appointment id (SCH-2 or SCH-1)",
                        ErrorCode::RequiredFieldMissing,
                    )
                })?;
            let starts_at = owned(
                sch.field(11)
                    .and_then(|f| f.component(4))
                    .and_then(|c| c.text())
                    .or_else(|| first_text(msg, &[("AIS", 4), ("AIG", 8), ("AIL", 6), ("AIP", 6)])),
            );
            IntakeEvent::Appointment {
                patient,
                appointment_id,
                status,
                starts_at,
            }
        }
    })
}

fn first_text<'a>(msg: &Message<'a>, places: &[(&str, usize)]) -> Option<Cow<'a, str>> {
    places.iter().find_map(|(segment, field)| {
        msg.segments(segment)
            .find_map(|s| s.field(*field)?.component(1)?.text())
    })
}

fn owned(value: Option<Cow<'_, str>>) -> Option<String> {
    value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The patient of a message, as the neutral [`PatientChange`]: the MRN
/// from PID-3 (chosen by [`MappingOptions`]) with its assigning authority
/// (CX-4 namespace, or universal id); names from PID-5 (the legal name when
/// flagged), DOB from PID-7 as `YYYY-MM-DD`, birth sex (`F`, `M`, `UNK`, or
/// the code as sent so that validation flags it), ZIP from PID-11, email
/// and cell phone from PID-40 / PID-13, each `None` when not sent; fields
/// sent as the HL7 null `""` in `cleared`; PID-15 the language (CWE-1,
/// else its text); deceased when PID-30 = `Y`, or a PID-29 date without
/// PID-30 = `N`.
fn patient_data(
    msg: &Message<'_>,
    pid: Segment<'_>,
    options: &MappingOptions,
) -> Result<PatientChange, Hl7Error> {
    let pid = pid.field_table();
    let mut cleared = Vec::new();
    let is_null = |n: usize| pid.field(n).is_some_and(|f| f.is_null());

    let (mrn, assigning_authority) = pid
        .field(3)
        .and_then(|f| pick_identifier(f, options))
        .ok_or_else(|| {
            let reason = if options.mrn_assigning_authority.is_some() {
                "no patient identifier from the configured assigning authority"
            } else {
                "no patient identifier"
            };
            Hl7Error::field("PID", 3, reason, ErrorCode::RequiredFieldMissing)
        })?;

    // PID-5: the legal name (XPN-7 = L) when one is flagged, else the first.
    let name = pid.field(5).and_then(|f| {
        f.repetitions()
            .find(|r| eq_text(r.text_of(7), "L") && !r.is_empty())
            .or_else(|| f.repetition(1))
    });
    let last_name = owned(
        name.and_then(|r| r.component(1))
            .and_then(|c| c.subcomponent(1))
            .and_then(|s| s.text()),
    );
    let first_name = owned(name.and_then(|r| r.text_of(2)));
    if is_null(5) {
        cleared.extend([DemographicField::FirstName, DemographicField::LastName]);
    }

    let date_of_birth = match pid
        .field(7)
        .and_then(|f| f.component(1))
        .and_then(|c| c.text())
    {
        None => None,
        Some(raw) => dtm_to_date(raw.trim()).map_err(|NotADate| {
            Hl7Error::field("PID", 7, "not a date", ErrorCode::DataTypeError)
        })?,
    };
    if is_null(7) {
        cleared.push(DemographicField::DateOfBirth);
    }

    let from_obx = match options.birth_sex_source {
        BirthSexSource::ObxThenPid8 => birth_sex_from_obx(msg),
        BirthSexSource::Pid8Only => None,
    };
    let birth_sex = from_obx.or_else(|| pid.text(8, 1).and_then(|s| map_sex(&s)));
    if is_null(8) && birth_sex.is_none() {
        cleared.push(DemographicField::BirthSex);
    }

    let zip = pid.field(11).and_then(|f| {
        let zip_of = |r: &Repetition<'_>| owned(r.text_of(5));
        f.repetitions()
            .find(|r| eq_text(r.text_of(7), "H") && zip_of(r).is_some())
            .or_else(|| f.repetitions().find(|r| zip_of(r).is_some()))
            .and_then(|r| zip_of(&r))
    });
    if is_null(11) {
        cleared.push(DemographicField::Zip);
    }

    // Telecoms: PID-40 (v2.7+) first, then PID-13.
    let telecoms = || {
        [40, 13]
            .into_iter()
            .filter_map(|n| pid.field(n))
            .flat_map(|f| f.repetitions())
    };
    let email = telecoms().find_map(|r| email_of(&r));
    let cell_phone = telecoms().find_map(|r| cell_phone_of(&r));
    if is_null(13) && pid.field(40).is_none_or(|f| f.is_empty() || f.is_null()) {
        cleared.extend([DemographicField::Email, DemographicField::CellPhone]);
    }

    let preferred_language = owned(pid.text(15, 1).or_else(|| pid.text(15, 2)));

    let deceased_date = match pid
        .field(29)
        .and_then(|f| f.component(1))
        .and_then(|c| c.text())
    {
        None => None,
        Some(raw) => dtm_to_civil_date(raw.trim()).map_err(|NotADate| {
            Hl7Error::field("PID", 29, "not a date", ErrorCode::DataTypeError)
        })?,
    };
    let indicator = pid.text(30, 1).map(|s| s.trim().to_ascii_uppercase());
    let deceased = match indicator.as_deref() {
        Some("Y") => true,
        Some("N") => false,
        _ => deceased_date.is_some(),
    };

    Ok(PatientChange {
        mrn,
        assigning_authority,
        sent: Demographics {
            first_name,
            last_name,
            date_of_birth,
            birth_sex,
            zip,
            email,
            cell_phone,
        },
        preferred_language,
        deceased,
        deceased_date,
        cleared,
    })
}

fn eq_text(value: Option<Cow<'_, str>>, wanted: &str) -> bool {
    value.is_some_and(|v| v.trim().eq_ignore_ascii_case(wanted))
}

/// Choose the MRN among the repetitions of a CX field (PID-3, MRG-1).
fn pick_identifier(field: Field<'_>, options: &MappingOptions) -> Option<(String, Option<String>)> {
    struct Cx<'a> {
        id: Cow<'a, str>,
        namespace: Option<Cow<'a, str>>,
        universal: Option<Cow<'a, str>>,
        kind: Option<Cow<'a, str>>,
    }
    let ids: Vec<Cx<'_>> = field
        .repetitions()
        .filter_map(|r| {
            let [id, _, _, authority, kind] = r.component_array();
            let sub = |n| {
                non_blank(
                    authority
                        .and_then(|a| a.subcomponent(n))
                        .map(|s| s.as_component()),
                )
            };
            Some(Cx {
                id: non_blank(id)?,
                namespace: sub(1),
                universal: sub(2),
                kind: non_blank(kind),
            })
        })
        .collect();
    let kind_is = |cx: &Cx<'_>, wanted: &str| {
        cx.kind
            .as_deref()
            .is_some_and(|k| k.trim().eq_ignore_ascii_case(wanted))
    };
    let chosen = match &options.mrn_assigning_authority {
        Some(wanted) => ids.iter().find(|cx| {
            [&cx.namespace, &cx.universal].iter().any(|v| {
                v.as_deref()
                    .is_some_and(|v| v.trim().eq_ignore_ascii_case(wanted.trim()))
            })
        }),
        None => ["MR", "MRN", "PI", "PT"]
            .iter()
            .find_map(|kind| ids.iter().find(|cx| kind_is(cx, kind)))
            .or_else(|| ids.iter().find(|cx| !kind_is(cx, "SS"))),
    }?;
    let authority = chosen
        .namespace
        .as_deref()
        .or(chosen.universal.as_deref())
        .map(|a| a.trim().to_string());
    Some((chosen.id.trim().to_string(), authority))
}

fn text(c: Option<Component<'_>>) -> Option<Cow<'_, str>> {
    c?.text()
}

/// Text that is not only spaces.
fn non_blank(c: Option<Component<'_>>) -> Option<Cow<'_, str>> {
    text(c).filter(|t| !t.trim().is_empty())
}

/// Email from an XTN: use code NET or equipment Internet, address in XTN-4
/// (older senders put it in XTN-1).
fn email_of(r: &Repetition<'_>) -> Option<String> {
    let [number, use_code, equipment, address]: [Option<Component<'_>>; 4] = r.component_array();
    let is_email = eq_text(text(use_code), "NET")
        || eq_text(text(equipment), "Internet")
        || eq_text(text(equipment), "X.400");
    if !is_email {
        return None;
    }
    let address =
        owned(text(address)).or_else(|| owned(text(number)).filter(|s| s.contains('@')))?;
    let address = match address.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("mailto:") => address[7..].trim().to_string(),
        _ => address,
    };
    Some(address).filter(|a| !a.is_empty())
}

/// Cell phone from an XTN with equipment type CP (any use code: PRN, ORN,
/// ...): `+<country><area><local>` from XTN-5/6/7, else the unformatted
/// XTN-12, else the formatted XTN-1.
fn cell_phone_of(r: &Repetition<'_>) -> Option<String> {
    let c: [Option<Component<'_>>; 12] = r.component_array();
    let text = |n: usize| c[n - 1].and_then(|c| c.text());
    if !eq_text(text(3), "CP") {
        return None;
    }
    if let Some(local) = owned(text(7)) {
        let mut number = String::new();
        if let Some(country) = owned(text(5)) {
            number.push('+');
            number.push_str(country.trim_start_matches('+'));
        }
        if let Some(area) = owned(text(6)) {
            number.push_str(&area);
        }
        number.push_str(&local);
        return Some(number);
    }
    owned(text(12)).or_else(|| owned(text(1)))
}

/// Birth sex from an OBX whose OBX-3 is LOINC 76689-9 (code in CWE-1 or
/// the alternate CWE-4) and whose OBX-5 has a value.
fn birth_sex_from_obx(msg: &Message<'_>) -> Option<String> {
    msg.segments("OBX").find_map(|obx| {
        let id = obx.field(3)?.repetition(1)?;
        let loinc = |code: usize, system: usize| {
            eq_text(id.text_of(code), "76689-9")
                && id.text_of(system).is_none_or(|s| {
                    s.trim().eq_ignore_ascii_case("LN") || s.trim().eq_ignore_ascii_case("LOINC")
                })
        };
        if !(loinc(1, 3) || loinc(4, 6)) {
            return None;
        }
        let value = obx.field(5)?.component(1)?.text()?;
        map_sex(&value)
    })
}

/// F and M as they are; an explicit unknown (`U`, `UNK`, `ASKU`) is `UNK`;
/// any other code is kept (upper case) so that validation flags it.
fn map_sex(code: &str) -> Option<String> {
    let code = code.trim().to_ascii_uppercase();
    let mapped = match code.as_str() {
        "" => return None,
        "F" | "FEMALE" => "F",
        "M" | "MALE" => "M",
        "U" | "UNK" | "UNKNOWN" | "ASKU" => "UNK",
        _ => return Some(code),
    };
    Some(mapped.to_string())
}

/// A value that is not an HL7 date/time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a date")]
pub struct NotADate;

/// An HL7 DTM/TS (`YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+/-ZZZZ]`) to an ISO date
/// `YYYY-MM-DD`. `Ok(None)` for a valid value without a day (`1985`,
/// `198503`): a real HL7 value, but not a full date of birth. `Err` for
/// anything that is not a DTM or not a real calendar date.
pub fn dtm_to_date(raw: &str) -> Result<Option<String>, NotADate> {
    dtm_to_civil_date(raw).map(|date| date.map(|d| d.to_string()))
}

/// [`dtm_to_date`] as a calendar date.
pub fn dtm_to_civil_date(raw: &str) -> Result<Option<Date>, NotADate> {
    let (main, zone) = match raw.find(['+', '-']) {
        Some(p) => (&raw[..p], Some(&raw[p + 1..])),
        None => (raw, None),
    };
    if let Some(zone) = zone
        && (zone.len() != 4 || !zone.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(NotADate);
    }
    let (digits, fraction) = match main.split_once('.') {
        Some((d, f)) => (d, Some(f)),
        None => (main, None),
    };
    if !digits.bytes().all(|b| b.is_ascii_digit())
        || !matches!(digits.len(), 4 | 6 | 8 | 10 | 12 | 14)
        || fraction.is_some_and(|f| {
            digits.len() != 14
                || f.is_empty()
                || f.len() > 4
                || !f.bytes().all(|b| b.is_ascii_digit())
        })
    {
        return Err(NotADate);
    }
    // The characters are digits in the right places; jiff says whether they
    // name a real month, day and time of day.
    let num = |range: std::ops::Range<usize>| -> i16 {
        digits.get(range).and_then(|s| s.parse().ok()).unwrap_or(0)
    };
    let narrow = |n: i16| i8::try_from(n).map_err(|_| NotADate);
    let month = if digits.len() >= 6 {
        narrow(num(4..6))?
    } else {
        1
    };
    if !(1..=12).contains(&month) {
        return Err(NotADate);
    }
    if digits.len() >= 10 {
        let (hour, minute, second) = (num(8..10), num(10..12), num(12..14));
        jiff::civil::Time::new(narrow(hour)?, narrow(minute)?, narrow(second)?, 0)
            .map_err(|_| NotADate)?;
    }
    if digits.len() < 8 {
        return Ok(None);
    }
    let year = num(0..4);
    if year == 0 {
        return Err(NotADate);
    }
    let date = Date::new(year, month, narrow(num(6..8))?).map_err(|_| NotADate)?;
    Ok(Some(date))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(dtm_to_date("19850317"), Ok(Some("1985-03-17".into())));
        assert_eq!(
            dtm_to_date("198503171230-0500"),
            Ok(Some("1985-03-17".into()))
        );
        assert_eq!(dtm_to_date("20240229"), Ok(Some("2024-02-29".into())));
        assert_eq!(
            dtm_to_date("20240229103000.1234+0100"),
            Ok(Some("2024-02-29".into()))
        );
        assert_eq!(
            dtm_to_date("20240229103000.5"),
            Ok(Some("2024-02-29".into()))
        );
        assert_eq!(dtm_to_date("1985"), Ok(None));
        assert_eq!(dtm_to_date("198503"), Ok(None));
        for bad in [
            "20230229",
            "19851301",
            "19850300",
            "1985031",
            "March 3",
            "1985-03-17",
            "19850317+05",
            "1985031725",
            "00000101",
            "19850317.5",
            "20240229103000.",
            "20240229103000.12345",
            "20240229103000.1a",
            "",
        ] {
            assert_eq!(dtm_to_date(bad), Err(NotADate), "{bad}");
        }
    }

    #[test]
    fn versions() {
        for ok in [
            "2.3", "2.3.1", "2.4", "2.5.1", "2.6", "2.7.1", "2.8", "2.8.2",
        ] {
            assert!(is_supported_version(ok), "{ok}");
        }
        for bad in ["2.2", "2.9", "3.0", "", "2", "2.5.", "2.x", "v2.5"] {
            assert!(!is_supported_version(bad), "{bad}");
        }
    }

    /// The header of a message that does not parse is still read when
    /// the frame starts with blanks, MLLP's start byte or a byte order mark.
    #[test]
    fn a_salvaged_header_skips_what_may_precede_msh() {
        // A well-formed MSH, and one whose MSH-2 repeats a delimiter (read
        // field by field).
        for msh_2 in ["^~\\&", "^^\\&"] {
            let msh =
                format!("MSH|{msh_2}|EHR|NORTH|ENROLL|PORTAL|20260905120000||ADT^A04|MSG1|P|2.5.1");
            for before in ["", " \r\n", "\u{b}", "\u{feff}", "\u{b}\u{feff} "] {
                let header = Header::salvage(&format!("{before}{msh}\rPID|broken"));
                assert_eq!(
                    header.map(|h| (h.control_id, h.sending_facility.namespace_id)),
                    Some(("MSG1".to_string(), "NORTH".to_string())),
                    "{msh_2} after {before:?}"
                );
            }
        }
        assert_eq!(Header::salvage("\u{b}PID|1"), None);
    }

    /// Read field by field, MSH-2's first character splits components
    /// only when it can be a delimiter; otherwise `^` does.
    #[test]
    fn bare_fields_split_components_at_a_usable_msh_2_only() {
        let line = |msh2: &str, c: &str| {
            format!(
                "MSH|{msh2}|EHR|NORTH{c}1.2.3{c}ISO|ENROLL|PORTAL|20260905||ADT{c}A04|MSG1|P|2.5.1"
            )
        };
        for (name, line) in [
            ("a letter", line("XY", "^")),
            ("empty", line("", "^")),
            ("another delimiter", line("#~\\&", "#")),
        ] {
            let header = Header::from_bare_fields(&line).expect(name);
            assert_eq!(header.sending_facility.namespace_id, "NORTH", "{name}");
            assert_eq!(
                (header.message_type.as_str(), header.trigger_event.as_str()),
                ("ADT", "A04"),
                "{name}"
            );
            assert_eq!(header.control_id, "MSG1", "{name}");
            assert_eq!(header.delimiters, Delimiters::STANDARD, "{name}");
        }
        // The ACK keeps MSH-1, unless it clashes with a standard encoding
        // character, which the ACK declares in its own MSH-2.
        let hash =
            Header::from_bare_fields("MSH#XY#EHR#NORTH#ENROLL#PORTAL#20260905##ADT^A04#MSG1")
                .map(|h| (h.control_id, h.delimiters));
        let field_hash = Delimiters {
            field: b'#',
            ..Delimiters::STANDARD
        };
        assert_eq!(hash, Some(("MSG1".to_string(), field_hash)));
        let caret = Header::from_bare_fields("MSH^XY^EHR^NORTH^ENROLL^PORTAL^20260905^^ADT^MSG1")
            .map(|h| (h.control_id, h.delimiters));
        assert_eq!(caret, Some(("MSG1".to_string(), Delimiters::STANDARD)));
    }

    #[test]
    fn sexes() {
        assert_eq!(map_sex("f").as_deref(), Some("F"));
        assert_eq!(map_sex("Female").as_deref(), Some("F"));
        assert_eq!(map_sex("MALE ").as_deref(), Some("M"));
        assert_eq!(map_sex("unknown").as_deref(), Some("UNK"));
        assert_eq!(map_sex("U").as_deref(), Some("UNK"));
        assert_eq!(map_sex("O").as_deref(), Some("O"));
        assert_eq!(map_sex(" "), None);
    }
}
