//! R2: the four events that can trigger an auto invite.

use serde::{Deserialize, Serialize};

use crate::fields::{Demographics, Field};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Trigger {
    ChartAdded,
    /// Only required fields: a change to any other field (cell phone
    /// included) is not a trigger.
    RequiredFieldsChanged {
        fields: Vec<Field>,
    },
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

    /// The inverse of [`Trigger::key`], for a trigger read back from
    /// storage. The key does not carry which fields changed, so a
    /// `required_fields_changed` comes back with none listed.
    pub fn from_key(raw: &str) -> Option<Trigger> {
        [
            Trigger::ChartAdded,
            Trigger::RequiredFieldsChanged { fields: vec![] },
            Trigger::NewEncounter,
            Trigger::NewAppointment,
        ]
        .into_iter()
        .find(|trigger| trigger.key() == raw)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Demographics {
        Demographics {
            first_name: Some("Ada".into()),
            last_name: Some("Lovelace".into()),
            date_of_birth: Some("1985-12-10".into()),
            birth_sex: Some("F".into()),
            zip: Some("02139".into()),
            email: Some("ada@example.org".into()),
            cell_phone: Some("617-253-1000".into()),
        }
    }

    fn set(mut d: Demographics, field: Field, value: Option<&str>) -> Demographics {
        let slot = match field {
            Field::FirstName => &mut d.first_name,
            Field::LastName => &mut d.last_name,
            Field::DateOfBirth => &mut d.date_of_birth,
            Field::BirthSex => &mut d.birth_sex,
            Field::Zip => &mut d.zip,
            Field::Email => &mut d.email,
            Field::CellPhone => &mut d.cell_phone,
        };
        *slot = value.map(str::to_string);
        d
    }

    /// R2(b): which edits are changes of a required field. Values are
    /// compared normalized (trimmed, canonical spelling, email case-blind).
    #[test]
    fn r2_changed_required_fields() {
        use Field::*;
        #[rustfmt::skip]
        let rows: &[(&str, Field, Option<&str>, &[Field])] = &[
            ("first name", FirstName, Some("Augusta"), &[FirstName]),
            ("last name", LastName, Some("King"), &[LastName]),
            ("date of birth", DateOfBirth, Some("1985-12-11"), &[DateOfBirth]),
            ("birth sex", BirthSex, Some("M"), &[BirthSex]),
            ("zip", Zip, Some("02140"), &[Zip]),
            ("zip to zip+4", Zip, Some("02139-4307"), &[Zip]),
            ("email", Email, Some("ada@example.com"), &[Email]),
            ("email local part", Email, Some("ada2@example.org"), &[Email]),
            ("first name removed", FirstName, None, &[FirstName]),
            ("email removed", Email, None, &[Email]),
            ("email blanked", Email, Some("  "), &[Email]),
            ("valid to invalid zip", Zip, Some("0213"), &[Zip]),
            ("name case is a change", LastName, Some("LOVELACE"), &[LastName]),
            ("cell phone changed", CellPhone, Some("617-253-1001"), &[]),
            ("cell phone removed", CellPhone, None, &[]),
            ("cell phone made invalid", CellPhone, Some("12"), &[]),
            ("cell phone respelt", CellPhone, Some("+1 (617) 253-1000"), &[]),
            ("unchanged", FirstName, Some("Ada"), &[]),
            ("name whitespace only", FirstName, Some("  Ada \t"), &[]),
            ("email whitespace only", Email, Some(" ada@example.org "), &[]),
            ("email case only", Email, Some("ADA@Example.ORG"), &[]),
            ("birth sex spelling", BirthSex, Some("female"), &[]),
            ("birth sex case", BirthSex, Some("f"), &[]),
            ("zip padded", Zip, Some(" 02139 "), &[]),
            ("dob padded", DateOfBirth, Some("1985-12-10 "), &[]),
        ];
        for &(name, field, value, expected) in rows {
            let new = set(base(), field, value);
            assert_eq!(
                changed_required_fields(&base(), &new),
                expected,
                "{name}: old -> new"
            );
            assert_eq!(
                changed_required_fields(&new, &base()),
                expected,
                "{name}: new -> old"
            );
        }
    }

    #[test]
    fn r2_zip_respellings_and_several_changes() {
        let nine = set(base(), Field::Zip, Some("123456789"));
        let plus4 = set(base(), Field::Zip, Some("12345-6789"));
        assert_eq!(changed_required_fields(&nine, &plus4), vec![]);

        let empty = Demographics::default();
        assert_eq!(
            changed_required_fields(&empty, &base()),
            Field::REQUIRED.to_vec(),
            "all six, in the order staff see them, cell phone never"
        );
        let mut new = set(base(), Field::Email, Some("new@example.org"));
        new = set(new, Field::FirstName, Some("Augusta"));
        new = set(new, Field::CellPhone, None);
        assert_eq!(
            changed_required_fields(&base(), &new),
            vec![Field::FirstName, Field::Email]
        );
        assert_eq!(changed_required_fields(&empty, &empty), vec![]);
    }

    /// One of each kind.
    fn every_trigger() -> [Trigger; 4] {
        [
            Trigger::ChartAdded,
            Trigger::RequiredFieldsChanged {
                fields: vec![Field::Email],
            },
            Trigger::NewEncounter,
            Trigger::NewAppointment,
        ]
    }

    #[test]
    fn r2_trigger_keys_read_back() {
        let triggers = every_trigger();
        for trigger in &triggers {
            let back = Trigger::from_key(trigger.key());
            assert_eq!(back.as_ref().map(Trigger::key), Some(trigger.key()));
        }
        assert_eq!(
            Trigger::from_key("required_fields_changed"),
            Some(Trigger::RequiredFieldsChanged { fields: vec![] }),
            "the key does not carry the fields"
        );
        assert_eq!(
            Trigger::from_key("new_encounter"),
            Some(Trigger::NewEncounter)
        );
        assert_eq!(Trigger::from_key("chart added"), None);
        assert_eq!(Trigger::from_key(""), None);
    }

    #[test]
    fn r2_trigger_keys_are_distinct_and_match_serde() {
        let triggers = every_trigger();
        let keys: std::collections::BTreeSet<&str> = triggers.iter().map(Trigger::key).collect();
        assert_eq!(keys.len(), 4);
        for trigger in &triggers {
            let json = serde_json::to_value(trigger).unwrap();
            assert_eq!(json["kind"], trigger.key(), "{trigger:?}");
            let back: Trigger = serde_json::from_value(json).unwrap();
            assert_eq!(&back, trigger);
        }
        assert_eq!(
            serde_json::to_value(&triggers[1]).unwrap(),
            serde_json::json!({"kind": "required_fields_changed", "fields": ["email"]})
        );
    }
}
