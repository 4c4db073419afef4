//! FHIR resources to Enroll's intake ([`PatientChange`], [`IntakeEvent`])
//! and a stored patient back to a FHIR Patient.

use enroll_core::{AppointmentStatus, Demographics, PatientChange, StaffStatus};
use jiff::civil::Date;

use super::outcome::FhirError;
use super::resources::{
    Address, CodeableConcept, Coding, Communication, ContactPoint, Extension, HumanName,
    Identifier, Patient, Reference,
};
use super::select::{self, date_prefix};

/// US Core's birth sex extension (`F`, `M`, `UNK`).
pub const BIRTHSEX_URL: &str = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex";
/// Enroll's own, read-only: the enrollment status (R14) as a Coding whose
/// code is the staff status key and whose display is its words.
pub const STATUS_URL: &str = "https://enroll.invalid/fhir/StructureDefinition/enrollment-status";
pub const STATUS_SYSTEM: &str = "https://enroll.invalid/fhir/CodeSystem/enrollment-status";

/// Whether `raw` is a FHIR `date` (`YYYY`, `YYYY-MM`, `YYYY-MM-DD`) that is
/// a real day of the calendar.
fn is_fhir_date(raw: &str) -> bool {
    let shape = match raw.len() {
        4 => raw.bytes().all(|b| b.is_ascii_digit()),
        7 | 10 => raw.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        }),
        _ => false,
    };
    if !shape {
        return false;
    }
    if raw.len() == 10 {
        return raw.parse::<Date>().is_ok();
    }
    date_prefix(raw).is_some()
}

/// The MRN the Patient names, or why none.
pub fn patient_mrn(patient: &Patient, today: Date) -> Option<String> {
    select::mrn(&patient.identifier, today)
        .and_then(|i| i.value.as_deref())
        .map(|v| v.trim().to_string())
}

/// What a Patient resource says, as a change that replaces the chart's
/// demographics (FHIR create and update send the whole resource). `mrn` is
/// the chart's when the request addresses one (PUT by id); otherwise the
/// resource's identifier.
pub fn patient_change(
    patient: &Patient,
    mrn: Option<&str>,
    today: Date,
) -> Result<PatientChange, FhirError> {
    if patient.resource_type != "Patient" {
        return Err(FhirError::invalid(
            "Patient.resourceType",
            format!("expected a Patient, not {}", patient.resource_type),
        ));
    }
    let named = patient_mrn(patient, today);
    let mrn = match (mrn, named) {
        (Some(ours), Some(theirs)) if ours != theirs => {
            return Err(FhirError::unprocessable(
                "Patient.identifier",
                "the MRN of a chart cannot change: this resource names another MRN",
            ));
        }
        (Some(ours), _) => ours.to_string(),
        (None, Some(theirs)) => theirs,
        (None, None) => {
            return Err(FhirError::unprocessable(
                "Patient.identifier",
                "the Patient needs an identifier that is its medical record number \
                 (type MR, or use usual/official)",
            ));
        }
    };
    let date_of_birth = match patient.birth_date.as_deref() {
        Some(raw) if !is_fhir_date(raw) => {
            return Err(FhirError::invalid(
                "Patient.birthDate",
                "birthDate must be a FHIR date such as 1987-02-20",
            ));
        }
        Some(raw) if raw.len() != 10 => {
            return Err(FhirError::unprocessable(
                "Patient.birthDate",
                "Enroll needs the full date of birth (YYYY-MM-DD), not only a year or month",
            ));
        }
        other => other.map(str::to_string),
    };
    let birth_sex = patient
        .extension
        .iter()
        .find(|e| e.url == BIRTHSEX_URL)
        .and_then(|e| e.value_code.clone());
    let name = select::current_name(&patient.name, today);
    let demographics = Demographics {
        first_name: name.and_then(|n| n.given.first().cloned()),
        last_name: name.and_then(|n| n.family.clone()),
        date_of_birth,
        birth_sex,
        zip: select::current_address(&patient.address, today).and_then(|a| a.postal_code.clone()),
        email: select::current_email(&patient.telecom, today).and_then(|t| t.value.clone()),
        cell_phone: select::current_cell_phone(&patient.telecom, today)
            .and_then(|t| t.value.clone()),
    };
    let mut change = PatientChange::replacing(&mrn, &demographics);
    change.assigning_authority =
        select::mrn(&patient.identifier, today).and_then(|i| i.system.clone());
    change.preferred_language = preferred_language(&patient.communication);
    if let Some(raw) = patient.deceased_date_time.as_deref() {
        change.deceased = true;
        change.deceased_date = Some(date_prefix(raw).ok_or_else(|| {
            FhirError::invalid(
                "Patient.deceasedDateTime",
                "deceasedDateTime must be a FHIR dateTime such as 2024-05-01",
            )
        })?);
    }
    if patient.deceased_boolean == Some(true) {
        change.deceased = true;
    }
    Ok(change)
}

/// The preferred communication language (else the first), as its code or text.
fn preferred_language(communication: &[Communication]) -> Option<String> {
    let chosen = communication
        .iter()
        .find(|c| c.preferred == Some(true))
        .or_else(|| communication.first())?;
    chosen
        .language
        .coding
        .iter()
        .find_map(|c| c.code.clone())
        .or_else(|| chosen.language.text.clone())
}

/// A stored patient as a FHIR Patient, with its enrollment status.
pub fn patient_resource(
    patient: &enroll_store::Patient,
    practice_code: &str,
    status: &StaffStatus,
) -> Patient {
    let d = &patient.demographics;
    let mut extension = Vec::new();
    if let Some(sex) = &d.birth_sex {
        extension.push(Extension {
            url: BIRTHSEX_URL.into(),
            value_code: Some(sex.clone()),
            value_coding: None,
        });
    }
    let key = serde_json::to_value(status)
        .ok()
        .and_then(|v| v.get("status").and_then(|s| s.as_str()).map(str::to_string));
    extension.push(Extension {
        url: STATUS_URL.into(),
        value_code: None,
        value_coding: Some(Coding {
            system: Some(STATUS_SYSTEM.into()),
            code: key,
            display: Some(status.words()),
        }),
    });
    let name = (d.first_name.is_some() || d.last_name.is_some()).then(|| HumanName {
        use_: Some("official".into()),
        family: d.last_name.clone(),
        given: d.first_name.iter().cloned().collect(),
        period: None,
    });
    let mut telecom = Vec::new();
    if let Some(email) = &d.email {
        telecom.push(ContactPoint {
            system: Some("email".into()),
            value: Some(email.clone()),
            ..ContactPoint::default()
        });
    }
    if let Some(cell) = &d.cell_phone {
        telecom.push(ContactPoint {
            system: Some("phone".into()),
            value: Some(cell.clone()),
            use_: Some("mobile".into()),
            ..ContactPoint::default()
        });
    }
    Patient {
        resource_type: "Patient".into(),
        id: Some(patient.id.to_string()),
        extension,
        identifier: vec![Identifier {
            use_: Some("usual".into()),
            type_: Some(CodeableConcept {
                coding: vec![Coding {
                    system: Some(select::V2_0203.into()),
                    code: Some("MR".into()),
                    display: Some("Medical Record Number".into()),
                }],
                text: None,
            }),
            system: None,
            value: Some(patient.mrn.clone()),
            period: None,
        }],
        name: name.into_iter().collect(),
        telecom,
        birth_date: d.date_of_birth.clone(),
        deceased_boolean: patient.deceased.then_some(true),
        deceased_date_time: None,
        address: d
            .zip
            .iter()
            .map(|zip| Address {
                use_: Some("home".into()),
                postal_code: Some(zip.clone()),
                ..Address::default()
            })
            .collect(),
        communication: patient
            .preferred_language
            .iter()
            .map(|language| Communication {
                language: CodeableConcept {
                    coding: Vec::new(),
                    text: Some(language.clone()),
                },
                preferred: Some(true),
            })
            .collect(),
        managing_organization: Some(Reference {
            reference: Some(format!("Organization/{practice_code}")),
        }),
    }
}

/// The patient id a reference names (`Patient/42`), or why not.
pub fn patient_reference(reference: Option<&str>, path: &str) -> Result<i64, FhirError> {
    let raw = reference.ok_or_else(|| {
        FhirError::unprocessable(
            path,
            "a reference to the patient (Patient/{id}) is required",
        )
    })?;
    raw.trim()
        .strip_prefix("Patient/")
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| {
            FhirError::unprocessable(
                path,
                "the patient must be referenced as Patient/{id}, with the id Enroll gave it",
            )
        })
}

/// An Encounter's class (`AMB`, `IMP`, `EMER`) as HL7 v2's patient class.
pub fn patient_class(code: &str) -> String {
    match code {
        "AMB" => "O".into(),
        "IMP" | "ACUTE" | "NONAC" => "I".into(),
        "EMER" => "E".into(),
        other => other.into(),
    }
}

/// An Appointment's status as Enroll records it; `None`: not a booking or
/// a change of one (proposed, pending, waitlist).
pub fn appointment_status(status: &str) -> Option<AppointmentStatus> {
    match status {
        "booked" => Some(AppointmentStatus::Booked),
        "cancelled" | "noshow" | "entered-in-error" => Some(AppointmentStatus::Cancelled),
        "arrived" | "fulfilled" | "checked-in" => Some(AppointmentStatus::Modified),
        _ => None,
    }
}

/// The identifier value of a resource, else its id: the source's own
/// visit number or appointment id.
pub fn source_id(identifiers: &[Identifier], id: Option<&str>) -> Option<String> {
    identifiers
        .iter()
        .find_map(|i| i.value.as_deref().map(str::trim).filter(|v| !v.is_empty()))
        .or(id.map(str::trim).filter(|v| !v.is_empty()))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fhir_dates() {
        for good in ["1987", "1987-02", "1987-02-20"] {
            assert!(is_fhir_date(good), "{good}");
        }
        for bad in ["1987-02-30", "02/20/1987", "1987-2-20", "", "July 4"] {
            assert!(!is_fhir_date(bad), "{bad}");
        }
    }

    #[test]
    fn classes_and_statuses() {
        assert_eq!(patient_class("AMB"), "O");
        assert_eq!(
            appointment_status("booked"),
            Some(AppointmentStatus::Booked)
        );
        assert_eq!(
            appointment_status("cancelled"),
            Some(AppointmentStatus::Cancelled)
        );
        assert_eq!(appointment_status("proposed"), None);
        assert_eq!(patient_reference(Some("Patient/42"), "x").ok(), Some(42));
        assert!(patient_reference(Some("Patient/abc"), "x").is_err());
        assert_eq!(source_id(&[], Some("enc-1")), Some("enc-1".into()));
    }
}
