//! What a source of patient data tells Enroll, in one form whatever the
//! source: an HL7 v2 message (`enroll_hl7::map_event`), a JSON API call,
//! and next a FHIR resource or a row of a CSV roster. Each source maps its
//! own syntax to an [`IntakeEvent`]; the store applies it in one place
//! (`Store::apply_intake`, `Tx::apply_intake`) with the source recorded on
//! the timeline, raising the triggers of R2.
//!
//! A patient is named by its medical record number within the practice the
//! event is applied to; the event says only what the source sent
//! ([`PatientChange`]), so an update never erases what it did not mention.

use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::fields::{Demographics, Field};

/// A patient as one event describes it: only what the source sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatientChange {
    /// The medical record number: the practice's own identifier of the
    /// chart (HL7 PID-3, chosen by the mapping's options).
    pub mrn: String,
    /// Who issued the MRN, when the source says (HL7 CX-4, a FHIR
    /// identifier's system). Not stored: the practice decides whose MRNs
    /// it takes (HL7: `MappingOptions::mrn_assigning_authority`).
    pub assigning_authority: Option<String>,
    /// The values sent; `None` is "not sent": keep what we have. Names,
    /// DOB as `YYYY-MM-DD`, birth sex (`F`, `M`, `UNK`, or the code as sent
    /// so that R1 flags it), ZIP, email and cell phone, as the source wrote
    /// them (the store normalises them).
    pub sent: Demographics,
    /// Fields the source said to remove (HL7's null `""`; a replacement
    /// such as the API's PUT, which clears what it does not give).
    pub cleared: Vec<Field>,
    /// The language preference as the source recorded it (`spa`, `es-MX`,
    /// `Spanish`, ...). Kept as text, not as a [`crate::Language`]: the
    /// chart keeps what the EHR said, and `Language::from_preference`
    /// reads it when Enroll speaks to the patient. `None`: not sent.
    pub preferred_language: Option<String>,
    /// The source says the patient died: never invited (R4), and what is
    /// pending is cancelled. `false` says nothing (it never revives).
    pub deceased: bool,
    /// The date of death, when the source says (HL7 PID-29). Not stored.
    pub deceased_date: Option<Date>,
}

impl PatientChange {
    /// A change that replaces the chart's demographics with `demographics`:
    /// a field given is written, a field not given is cleared (the API's
    /// create and PUT, which send the whole record).
    pub fn replacing(mrn: &str, demographics: &Demographics) -> PatientChange {
        PatientChange {
            mrn: mrn.to_string(),
            sent: demographics.clone(),
            cleared: Field::ALL
                .into_iter()
                .filter(|&field| demographics.get(field).is_none())
                .collect(),
            ..PatientChange::default()
        }
    }
}

/// What a registration does when the MRN is already known in the practice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IfKnown {
    /// Update the chart (HL7 A04/A28: the sender registers the patient
    /// again, or we missed nothing but a repeat).
    #[default]
    Update,
    /// Refuse: nothing is written (`StoreError::DuplicateMrn`), as the
    /// API's create answers 409.
    Refuse,
}

/// An appointment's state as its source reports it. Only a new booking is
/// a trigger (R2 d); the changes are recorded on the timeline and the
/// appointment row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppointmentStatus {
    /// Booked (HL7 SIU^S12, a FHIR Appointment created booked).
    Booked,
    /// Moved to another time (SIU^S13).
    Rescheduled,
    /// Changed otherwise (SIU^S14).
    Modified,
    /// Cancelled (SIU^S15).
    Cancelled,
}

impl AppointmentStatus {
    /// Every status, in the order above.
    pub const ALL: [AppointmentStatus; 4] = [
        AppointmentStatus::Booked,
        AppointmentStatus::Rescheduled,
        AppointmentStatus::Modified,
        AppointmentStatus::Cancelled,
    ];

    /// The stored key: `booked`, `rescheduled`, `modified`, `cancelled`.
    pub fn key(self) -> &'static str {
        match self {
            AppointmentStatus::Booked => "booked",
            AppointmentStatus::Rescheduled => "rescheduled",
            AppointmentStatus::Modified => "modified",
            AppointmentStatus::Cancelled => "cancelled",
        }
    }
}

/// What one message, request or row means for Enroll. Every variant
/// carries the patient it is about, which is written first (so that a
/// death in the same event stops the invite), then the encounter,
/// appointment or merge, then the triggers are decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntakeEvent {
    /// The source registers the patient: chart added (R2 a), or, when the
    /// MRN is known, what [`IfKnown`] says. HL7 A04 and A01 without a visit
    /// number and A28 (update when known); the API's create (refused).
    Register {
        patient: PatientChange,
        if_known: IfKnown,
    },
    /// The source updates what it knows of the patient (HL7 A08, A31; the
    /// API's PUT). A change to a required field is a trigger (R2 b, R8). An
    /// unknown MRN adds the chart: the sender evidently has the patient,
    /// and we would otherwise lose them.
    Update(PatientChange),
    /// A visit (HL7 A01 or A04 with PV1-19): a new encounter (R2 c) when
    /// the visit number is new to the practice; a repeat changes nothing
    /// but the patient.
    Encounter {
        patient: PatientChange,
        /// The source's visit number (PV1-19.1), unique in the practice.
        visit_number: String,
        /// `O` outpatient, `I` inpatient, ... (PV1-2), as sent.
        patient_class: Option<String>,
        /// The admission time as sent (HL7 DTM, local to the sender); the
        /// CMS measure reads its date (`measure::visit_date`).
        admitted_at: Option<String>,
    },
    /// An appointment (HL7 SIU^S12-S15): a new booking is a trigger (R2 d);
    /// a repeated booking and the other statuses are only recorded.
    Appointment {
        patient: PatientChange,
        /// The source's appointment id (SCH-2.1, else SCH-1.1).
        appointment_id: String,
        status: AppointmentStatus,
        /// The start as sent (HL7 DTM); `None` keeps the one we have.
        starts_at: Option<String>,
    },
    /// Two charts are one patient (HL7 A40): `merged_mrn` goes into the
    /// chart of `patient.mrn`, the survivor, whose data `patient` carries.
    /// How the flags combine is [`crate::merged_flags`].
    Merge {
        patient: PatientChange,
        /// The chart merged away (MRG-1).
        merged_mrn: String,
        /// Who issued `merged_mrn`, when the source says. Not stored.
        merged_assigning_authority: Option<String>,
    },
}

impl IntakeEvent {
    /// A registration that updates a known chart (what HL7 A04/A28 mean).
    pub fn register(patient: PatientChange) -> IntakeEvent {
        IntakeEvent::Register {
            patient,
            if_known: IfKnown::Update,
        }
    }

    /// The patient the event is about (for a merge, the survivor).
    pub fn patient(&self) -> &PatientChange {
        match self {
            IntakeEvent::Update(patient)
            | IntakeEvent::Register { patient, .. }
            | IntakeEvent::Encounter { patient, .. }
            | IntakeEvent::Appointment { patient, .. }
            | IntakeEvent::Merge { patient, .. } => patient,
        }
    }

    /// What a known MRN leads to: only a registration may refuse it.
    pub fn if_known(&self) -> IfKnown {
        match self {
            IntakeEvent::Register { if_known, .. } => *if_known,
            _ => IfKnown::Update,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replacement_clears_every_field_it_does_not_give() {
        let given = Demographics {
            first_name: Some("Ida".into()),
            zip: Some("60616".into()),
            ..Demographics::default()
        };
        let change = PatientChange::replacing("M-1", &given);
        assert_eq!(change.mrn, "M-1");
        assert_eq!(change.sent, given);
        assert_eq!(
            change.cleared,
            [
                Field::LastName,
                Field::DateOfBirth,
                Field::BirthSex,
                Field::Email,
                Field::CellPhone
            ]
        );
        // Overlaid on any chart, it leaves exactly what was given.
        let ours = Demographics {
            last_name: Some("Wells".into()),
            email: Some("ida@example.org".into()),
            cell_phone: Some("+13125550100".into()),
            ..Demographics::default()
        };
        assert_eq!(ours.overlaid(&change.sent, &change.cleared), given);
        assert_eq!(change.preferred_language, None);
        assert!(!change.deceased);
    }

    #[test]
    fn appointment_keys_are_distinct_and_serialized_the_same() {
        let keys: Vec<&str> = AppointmentStatus::ALL.iter().map(|s| s.key()).collect();
        assert_eq!(keys, ["booked", "rescheduled", "modified", "cancelled"]);
        for status in AppointmentStatus::ALL {
            let json = serde_json::to_string(&status).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", status.key()));
        }
    }

    #[test]
    fn every_event_names_its_patient_and_only_a_registration_refuses() {
        let patient = |mrn: &str| PatientChange {
            mrn: mrn.into(),
            ..PatientChange::default()
        };
        let refuse = IntakeEvent::Register {
            patient: patient("R"),
            if_known: IfKnown::Refuse,
        };
        let events = [
            (IntakeEvent::register(patient("A")), "A", IfKnown::Update),
            (refuse, "R", IfKnown::Refuse),
            (IntakeEvent::Update(patient("U")), "U", IfKnown::Update),
            (
                IntakeEvent::Encounter {
                    patient: patient("E"),
                    visit_number: "V".into(),
                    patient_class: None,
                    admitted_at: None,
                },
                "E",
                IfKnown::Update,
            ),
            (
                IntakeEvent::Appointment {
                    patient: patient("P"),
                    appointment_id: "1".into(),
                    status: AppointmentStatus::Booked,
                    starts_at: None,
                },
                "P",
                IfKnown::Update,
            ),
            (
                IntakeEvent::Merge {
                    patient: patient("S"),
                    merged_mrn: "M".into(),
                    merged_assigning_authority: None,
                },
                "S",
                IfKnown::Update,
            ),
        ];
        for (event, mrn, if_known) in events {
            assert_eq!(event.patient().mrn, mrn, "{event:?}");
            assert_eq!(event.if_known(), if_known, "{event:?}");
        }
        assert_eq!(IfKnown::default(), IfKnown::Update);
    }
}
