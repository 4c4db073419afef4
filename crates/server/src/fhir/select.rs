//! Which of a Patient's names, addresses, emails and phones is the current
//! one, as FHIR's `use` and `period` say: pure functions of the resource
//! and today's date.
//!
//! - Not current: `use` = `old`, or a `period` that ended before today (or
//!   starts after it).
//! - Name: `official`, then `usual`, then one without `use`; never
//!   `old`, `maiden`, `nickname`, `anonymous`, `temp`.
//! - ZIP: a `home` address, then one without `use`, then `temp`, then
//!   `work`; never `billing` (nor `old`).
//! - Email: `system` = `email`; the lowest `rank`, `home` before `work`.
//! - Cell phone: `system` = `phone` (or `sms`) with `use` = `mobile`; a
//!   `home` or `work` phone is not a cell phone.

use jiff::civil::Date;

use super::resources::{Address, ContactPoint, HumanName, Identifier, Period};

/// The date part of a FHIR date or dateTime (`2020-07-22`,
/// `2020-07-22T10:00:00Z`); a year or a year-month is its first day.
pub fn date_prefix(raw: &str) -> Option<Date> {
    let raw = raw.trim();
    let date = raw.get(..10).unwrap_or(raw);
    let mut parts = date.split('-');
    let year: i16 = parts.next()?.parse().ok()?;
    let month: i8 = parts.next().map_or(Some(1), |m| m.parse().ok())?;
    let day: i8 = parts.next().map_or(Some(1), |d| d.parse().ok())?;
    Date::new(year, month, day).ok()
}

/// Whether `period` (none: always) includes `today`.
pub fn in_force(period: Option<&Period>, today: Date) -> bool {
    let Some(period) = period else {
        return true;
    };
    let ended = period
        .end
        .as_deref()
        .and_then(date_prefix)
        .is_some_and(|end| end < today);
    let not_yet = period
        .start
        .as_deref()
        .and_then(date_prefix)
        .is_some_and(|start| start > today);
    !ended && !not_yet
}

/// The rank of a `use` in `order` (earlier is better); `None`: never.
fn rank_of(use_: Option<&str>, order: &[Option<&str>]) -> Option<usize> {
    order.iter().position(|o| *o == use_)
}

/// The best of `items` by `order` of `use`, among those in force; the
/// first of equals.
fn best<'a, T>(
    items: impl Iterator<Item = &'a T>,
    today: Date,
    order: &[Option<&str>],
    use_of: impl Fn(&T) -> (Option<&str>, Option<&Period>, Option<u32>),
) -> Option<&'a T>
where
    T: 'a,
{
    items
        .filter_map(|item| {
            let (use_, period, rank) = use_of(item);
            if !in_force(period, today) {
                return None;
            }
            let by_use = rank_of(use_, order)?;
            Some(((rank.unwrap_or(u32::MAX), by_use), item))
        })
        .min_by_key(|(key, _)| *key)
        .map(|(_, item)| item)
}

/// The current name: its family name and its first given name.
pub fn current_name(names: &[HumanName], today: Date) -> Option<&HumanName> {
    const ORDER: [Option<&str>; 3] = [Some("official"), Some("usual"), None];
    // Names have no rank: `use` alone orders them.
    best(names.iter(), today, &ORDER, |n| {
        (n.use_.as_deref(), n.period.as_ref(), None)
    })
}

/// The current address that gives the ZIP (its `postalCode`).
pub fn current_address(addresses: &[Address], today: Date) -> Option<&Address> {
    const ORDER: [Option<&str>; 4] = [Some("home"), None, Some("temp"), Some("work")];
    best(
        addresses.iter().filter(|a| a.postal_code.is_some()),
        today,
        &ORDER,
        |a| (a.use_.as_deref(), a.period.as_ref(), None),
    )
}

/// The current email address.
pub fn current_email(telecom: &[ContactPoint], today: Date) -> Option<&ContactPoint> {
    const ORDER: [Option<&str>; 5] = [
        Some("home"),
        None,
        Some("mobile"),
        Some("work"),
        Some("temp"),
    ];
    best(
        telecom
            .iter()
            .filter(|t| t.system.as_deref() == Some("email") && t.value.is_some()),
        today,
        &ORDER,
        |t| (t.use_.as_deref(), t.period.as_ref(), t.rank),
    )
}

/// The current cell phone: a mobile phone; a home or work phone is not one.
pub fn current_cell_phone(telecom: &[ContactPoint], today: Date) -> Option<&ContactPoint> {
    const ORDER: [Option<&str>; 1] = [Some("mobile")];
    best(
        telecom.iter().filter(|t| {
            matches!(t.system.as_deref(), Some("phone") | Some("sms")) && t.value.is_some()
        }),
        today,
        &ORDER,
        |t| (t.use_.as_deref(), t.period.as_ref(), t.rank),
    )
}

/// The code system of HL7 v2 identifier types (`MR`: medical record number).
pub const V2_0203: &str = "http://terminology.hl7.org/CodeSystem/v2-0203";

/// The identifier that is the MRN: one typed `MR`, else the `usual` or
/// `official` one, else one without `use`; never `old`, `temp` or
/// `secondary`, nor one whose period ended.
pub fn mrn(identifiers: &[Identifier], today: Date) -> Option<&Identifier> {
    let typed_mr = |i: &Identifier| {
        i.type_
            .as_ref()
            .is_some_and(|t| t.coding.iter().any(|c| c.code.as_deref() == Some("MR")))
    };
    const ORDER: [Option<&str>; 3] = [Some("usual"), Some("official"), None];
    let with_value = || {
        identifiers
            .iter()
            .filter(|i| i.value.as_deref().is_some_and(|v| !v.trim().is_empty()))
    };
    best(with_value().filter(|i| typed_mr(i)), today, &ORDER, |i| {
        (i.use_.as_deref(), i.period.as_ref(), None)
    })
    .or_else(|| {
        best(with_value(), today, &ORDER, |i| {
            (i.use_.as_deref(), i.period.as_ref(), None)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> Date {
        jiff::civil::date(2026, 12, 2)
    }

    fn period(start: Option<&str>, end: Option<&str>) -> Option<Period> {
        Some(Period {
            start: start.map(str::to_string),
            end: end.map(str::to_string),
        })
    }

    fn name(use_: Option<&str>, family: &str, period: Option<Period>) -> HumanName {
        HumanName {
            use_: use_.map(str::to_string),
            family: Some(family.into()),
            given: vec!["Amy".into()],
            period,
        }
    }

    fn telecom(system: &str, use_: Option<&str>, value: &str) -> ContactPoint {
        ContactPoint {
            system: Some(system.into()),
            value: Some(value.into()),
            use_: use_.map(str::to_string),
            ..ContactPoint::default()
        }
    }

    fn address(use_: Option<&str>, zip: &str, period: Option<Period>) -> Address {
        Address {
            use_: use_.map(str::to_string),
            postal_code: Some(zip.into()),
            period,
            ..Address::default()
        }
    }

    #[test]
    fn dates_and_periods() {
        assert_eq!(
            date_prefix("2020-07-22"),
            Some(jiff::civil::date(2020, 7, 22))
        );
        assert_eq!(
            date_prefix("2020-07-22T10:00:00Z"),
            Some(jiff::civil::date(2020, 7, 22))
        );
        assert_eq!(date_prefix("2020"), Some(jiff::civil::date(2020, 1, 1)));
        assert_eq!(date_prefix("July"), None);
        assert!(in_force(None, today()));
        assert!(in_force(period(Some("2020-07-22"), None).as_ref(), today()));
        assert!(!in_force(
            period(None, Some("2020-07-22")).as_ref(),
            today()
        ));
        assert!(in_force(period(None, Some("2026-12-02")).as_ref(), today()));
        assert!(!in_force(
            period(Some("2027-01-01"), None).as_ref(),
            today()
        ));
    }

    #[test]
    fn an_old_name_or_one_whose_period_ended_is_not_current() {
        let names = [
            name(
                Some("old"),
                "Shaw",
                period(Some("2016-12-06"), Some("2020-07-22")),
            ),
            name(None, "Baxter", period(Some("2020-07-22"), None)),
        ];
        assert_eq!(
            current_name(&names, today()).and_then(|n| n.family.as_deref()),
            Some("Baxter")
        );
        // Without `use`, an ended period alone makes a name not current.
        let names = [
            name(None, "Shaw", period(None, Some("2020-07-22"))),
            name(None, "Baxter", None),
        ];
        assert_eq!(
            current_name(&names, today()).unwrap().family.as_deref(),
            Some("Baxter")
        );
        let only_old = [name(Some("old"), "Shaw", None)];
        assert_eq!(current_name(&only_old, today()), None);
    }

    #[test]
    fn the_official_or_usual_name_is_preferred() {
        let names = [
            name(Some("nickname"), "Bax", None),
            name(None, "Plain", None),
            name(Some("usual"), "Usual", None),
            name(Some("official"), "Official", None),
            name(Some("maiden"), "Maiden", None),
        ];
        assert_eq!(
            current_name(&names, today()).unwrap().family.as_deref(),
            Some("Official")
        );
        assert_eq!(
            current_name(&names[..3], today())
                .unwrap()
                .family
                .as_deref(),
            Some("Usual")
        );
        assert_eq!(
            current_name(&names[..2], today())
                .unwrap()
                .family
                .as_deref(),
            Some("Plain")
        );
        assert_eq!(current_name(&names[..1], today()), None);
    }

    #[test]
    fn a_billing_or_old_address_is_not_the_zip() {
        let addresses = [
            address(Some("old"), "74047", period(None, Some("2020-07-22"))),
            address(Some("billing"), "10001", None),
            address(None, "74048", period(Some("2020-07-22"), None)),
        ];
        assert_eq!(
            current_address(&addresses, today())
                .unwrap()
                .postal_code
                .as_deref(),
            Some("74048")
        );
        let addresses = [
            address(Some("work"), "60601", None),
            address(Some("home"), "60616", None),
        ];
        assert_eq!(
            current_address(&addresses, today())
                .unwrap()
                .postal_code
                .as_deref(),
            Some("60616")
        );
        let ended_home = [
            address(Some("home"), "60616", period(None, Some("2025-01-01"))),
            address(Some("billing"), "10001", None),
        ];
        assert_eq!(current_address(&ended_home, today()), None);
    }

    #[test]
    fn only_a_mobile_phone_is_the_cell_phone() {
        let telecom_ = [
            telecom("phone", Some("home"), "555-555-5555"),
            telecom("phone", Some("work"), "555-555-0001"),
            telecom("email", None, "amy@example.com"),
        ];
        assert_eq!(current_cell_phone(&telecom_, today()), None);
        let with_mobile = [
            telecom("phone", Some("home"), "555-555-5555"),
            telecom("phone", Some("mobile"), "312-555-0100"),
        ];
        assert_eq!(
            current_cell_phone(&with_mobile, today())
                .unwrap()
                .value
                .as_deref(),
            Some("312-555-0100")
        );
        let mut old_mobile = telecom("phone", Some("mobile"), "312-555-0199");
        old_mobile.period = period(None, Some("2024-01-01"));
        assert_eq!(current_cell_phone(&[old_mobile], today()), None);
    }

    #[test]
    fn the_email_is_system_email_and_not_old() {
        let telecom_ = [
            telecom("email", Some("old"), "old@example.com"),
            telecom("phone", Some("mobile"), "312-555-0100"),
            telecom("email", Some("work"), "work@example.com"),
            telecom("email", None, "amy@example.com"),
        ];
        assert_eq!(
            current_email(&telecom_, today()).unwrap().value.as_deref(),
            Some("amy@example.com")
        );
        // A rank overrides the order of `use`.
        let mut ranked = telecom("email", Some("work"), "work@example.com");
        ranked.rank = Some(1);
        let telecom_ = [telecom("email", Some("home"), "home@example.com"), ranked];
        assert_eq!(
            current_email(&telecom_, today()).unwrap().value.as_deref(),
            Some("work@example.com")
        );
        assert_eq!(
            current_email(&[telecom("email", Some("old"), "x@example.com")], today()),
            None
        );
    }

    #[test]
    fn the_mrn_is_the_identifier_typed_mr() {
        let ssn = Identifier {
            use_: Some("official".into()),
            system: Some("http://hl7.org/fhir/sid/us-ssn".into()),
            value: Some("999-99-9999".into()),
            ..Identifier::default()
        };
        let mr = Identifier {
            use_: Some("usual".into()),
            type_: Some(super::super::resources::CodeableConcept {
                coding: vec![super::super::resources::Coding {
                    system: Some(V2_0203.into()),
                    code: Some("MR".into()),
                    display: None,
                }],
                text: None,
            }),
            value: Some("1032702".into()),
            ..Identifier::default()
        };
        let ids = [ssn.clone(), mr];
        assert_eq!(
            mrn(&ids, today()).unwrap().value.as_deref(),
            Some("1032702")
        );
        // Without a typed MR, the usual or official identifier.
        assert_eq!(
            mrn(&[ssn], today()).unwrap().value.as_deref(),
            Some("999-99-9999")
        );
        let old = Identifier {
            use_: Some("old".into()),
            value: Some("OLD-1".into()),
            ..Identifier::default()
        };
        assert_eq!(mrn(&[old], today()), None);
    }
}
