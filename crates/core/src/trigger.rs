//! R2: the four events that can trigger an auto invite.

use serde::{Deserialize, Serialize};

use crate::fields::{Demographics, Field};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Trigger {
    ChartAdded,
    /// Only required fields: a change to any other field (cell phone
    /// included) is not a trigger.
    RequiredFieldsChanged { fields: Vec<Field> },
    NewEncounter,
    NewAppointment,
}

impl Trigger {
    /// Stable key for storage and the API: chart_added, required_fields_changed, ...
    pub fn key(&self) -> &'static str {
        match self {
            Trigger::ChartAdded => "chart_added",
            Trigger::RequiredFieldsChanged { .. } => "required_fields_changed",
            Trigger::NewEncounter => "new_encounter",
            Trigger::NewAppointment => "new_appointment",
        }
    }
}

/// The required fields whose normalized value differs between `old` and
/// `new`, in `Field::REQUIRED` order. Whitespace-only and case-only changes
/// of the email are not changes; the cell phone is never listed.
///
/// Comparing normalized values means a source that re-sends the same data
/// in another spelling ("f" for "F", "123456789" for "12345-6789") does not
/// re-invite the patient (R8 would otherwise turn formatting noise into
/// sends that eat into the cap of R7).
pub fn changed_required_fields(old: &Demographics, new: &Demographics) -> Vec<Field> {
    let (old, new) = (old.normalized(), new.normalized());
    Field::REQUIRED
        .into_iter()
        .filter(|&field| {
            let (a, b) = (old.get(field), new.get(field));
            match field {
                // Mail systems treat addresses case-insensitively in
                // practice; a case change is not a new address.
                Field::Email => a.map(str::to_lowercase) != b.map(str::to_lowercase),
                _ => a != b,
            }
        })
        .collect()
}
