//! R10 as pure rules: whether an activation link still works, the identity
//! check (date of birth and ZIP code, both), the one-time code's life, and
//! what a username may be. The store gathers the facts; the server's pages
//! show the answer. Time is passed in.

use jiff::civil::Date;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

/// The numbers of R10 that a practice may configure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActivationRules {
    /// Wrong identity answers before the link locks (R10: 5).
    pub max_identity_failures: i64,
    /// How long a one-time code works after it was sent.
    pub code_lifetime: SignedDuration,
    /// Wrong codes before that code stops working (a new one can be sent).
    pub max_code_failures: i64,
}

impl Default for ActivationRules {
    fn default() -> ActivationRules {
        ActivationRules {
            max_identity_failures: 5,
            code_lifetime: SignedDuration::from_mins(10),
            max_code_failures: 5,
        }
    }
}

/// What the store knows about one link and its patient right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkFacts<'a> {
    pub expires_at: Timestamp,
    /// The link finished an activation.
    pub used: bool,
    /// The chart it was sent for was merged into another one.
    pub revoked: bool,
    pub identity_failures: i64,
    /// The address the invite carrying it went to.
    pub sent_to: &'a str,
    pub patient_email: Option<&'a str>,
    pub patient_cell_phone: Option<&'a str>,
    pub patient_activated: bool,
    pub patient_deceased: bool,
    /// The patient row points at a surviving chart.
    pub patient_merged: bool,
}

/// What a link is good for. The patient sees three pages for the three
/// unusable states; none of them says why beyond that (a death, a merge or
/// a changed address all read "expired"), so a link tells nobody more
/// about the chart than the invite already did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    Usable,
    /// Activated already (by this link or another one).
    Used,
    /// Too many wrong identity answers: a new invite is needed.
    Locked,
    /// Past its time, or no longer meant for this chart and address.
    Expired,
}

/// Decides [`LinkState`]; the order says which page wins when several
/// apply: an active patient is told to sign in, a locked link stays locked.
pub fn link_state(facts: &LinkFacts<'_>, rules: &ActivationRules, now: Timestamp) -> LinkState {
    if facts.used || facts.patient_activated {
        return LinkState::Used;
    }
    if facts.identity_failures >= rules.max_identity_failures {
        return LinkState::Locked;
    }
    let gone = facts.revoked
        || facts.patient_deceased
        || facts.patient_merged
        || facts.expires_at <= now
        || !still_the_patients_address(facts);
    if gone {
        LinkState::Expired
    } else {
        LinkState::Usable
    }
}

/// R10's binding: the link works only while the address it was sent to is
/// still the chart's email (any case) or cell phone.
fn still_the_patients_address(facts: &LinkFacts<'_>) -> bool {
    let sent_to = facts.sent_to.trim();
    if sent_to.is_empty() {
        return false;
    }
    let email = facts
        .patient_email
        .is_some_and(|e| e.trim().eq_ignore_ascii_case(sent_to));
    let cell = facts.patient_cell_phone == Some(sent_to);
    email || cell
}

/// The identity check: both the date of birth and the ZIP code must match
/// the chart. The answer is one bool on purpose: nobody learns which of the
/// two was wrong. A chart without either never matches.
pub fn identity_matches(
    entered_dob: &str,
    entered_zip: &str,
    chart_dob: Option<Date>,
    chart_zip: Option<&str>,
) -> bool {
    let (Some(chart_dob), Some(chart_zip)) = (chart_dob, chart_zip) else {
        return false;
    };
    let dob_ok = parse_entered_date(entered_dob) == Some(chart_dob);
    let zip_ok = match (zip5(entered_zip), zip5(chart_zip)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    };
    dob_ok & zip_ok
}

/// A date as a browser's date field sends it (`1990-07-04`) or as people
/// type it where there is no date picker (`07/04/1990`, US order).
pub fn parse_entered_date(text: &str) -> Option<Date> {
    let text = text.trim();
    if let Ok(date) = text.parse::<Date>() {
        return Some(date);
    }
    let mut parts = text.split(['/', '-', '.']);
    let (month, day, year) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || year.len() != 4 {
        return None;
    }
    Date::new(year.parse().ok()?, month.parse().ok()?, day.parse().ok()?).ok()
}

/// The five-digit ZIP of `12345` or `12345-6789` (ZIP+4 on the chart
/// matches the five digits a patient types).
fn zip5(text: &str) -> Option<&str> {
    let text = text.trim();
    let five = text.get(..5)?;
    let rest = &text[5..];
    let rest_ok = rest.is_empty()
        || (rest.len() == 5
            && rest.starts_with('-')
            && rest[1..].bytes().all(|b| b.is_ascii_digit()));
    (five.bytes().all(|b| b.is_ascii_digit()) && rest_ok).then_some(five)
}

/// Whether a one-time code can still be tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeState {
    Open,
    Expired,
    /// Too many wrong codes: only a new code helps.
    Spent,
}

pub fn code_state(
    sent_at: Timestamp,
    failures: i64,
    rules: &ActivationRules,
    now: Timestamp,
) -> CodeState {
    if failures >= rules.max_code_failures {
        CodeState::Spent
    } else if now.duration_since(sent_at) >= rules.code_lifetime {
        CodeState::Expired
    } else {
        CodeState::Open
    }
}

/// Why a username is refused, in words for the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsernameProblem {
    TooShort,
    TooLong,
    BadCharacters,
}

pub const USERNAME_MIN: usize = 3;
pub const USERNAME_MAX: usize = 64;

/// The username as stored: trimmed and lowercased, so `Rosa@Example.org`
/// and `rosa@example.org` are one name. Letters, digits and `.-_@+`.
pub fn normalize_username(text: &str) -> Result<String, UsernameProblem> {
    let name = text.trim().to_lowercase();
    let length = name.chars().count();
    if length < USERNAME_MIN {
        return Err(UsernameProblem::TooShort);
    }
    if length > USERNAME_MAX {
        return Err(UsernameProblem::TooLong);
    }
    let allowed = |c: char| c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | '@' | '+');
    if !name.chars().all(allowed) {
        return Err(UsernameProblem::BadCharacters);
    }
    Ok(name)
}

/// Usernames to offer, best first: the email, then the email with the
/// first name in front (family members often share one address), then
/// numbered ones. The caller takes the first one not taken.
pub fn username_candidates(email: Option<&str>, first_name: Option<&str>) -> Vec<String> {
    let Some(email) = email.and_then(|e| normalize_username(e).ok()) else {
        return vec![];
    };
    let mut out = vec![email.clone()];
    let first: String = first_name
        .unwrap_or_default()
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric())
        .collect();
    if !first.is_empty() {
        out.extend(normalize_username(&format!("{first}.{email}")).ok());
    }
    out.extend((2..=9).filter_map(|n| normalize_username(&format!("{email}.{n}")).ok()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn usable() -> LinkFacts<'static> {
        LinkFacts {
            expires_at: at("2026-12-25T00:00:00Z"),
            used: false,
            revoked: false,
            identity_failures: 0,
            sent_to: "rosa@example.org",
            patient_email: Some("Rosa@Example.org"),
            patient_cell_phone: Some("+16175550100"),
            patient_activated: false,
            patient_deceased: false,
            patient_merged: false,
        }
    }

    #[test]
    #[rustfmt::skip]
    fn r10_link_state() {
        let now = at("2026-11-25T15:00:00Z");
        let rules = ActivationRules::default();
        let with = |f: fn(&mut LinkFacts<'static>)| { let mut x = usable(); f(&mut x); x };
        let cases: Vec<(&str, LinkFacts<'static>, LinkState)> = vec![
            ("fresh", usable(), LinkState::Usable),
            ("email in another case", with(|f| f.patient_email = Some("ROSA@example.org")), LinkState::Usable),
            ("sent to the cell phone", with(|f| f.sent_to = "+16175550100"), LinkState::Usable),
            ("4 failures", with(|f| f.identity_failures = 4), LinkState::Usable),
            ("5 failures lock", with(|f| f.identity_failures = 5), LinkState::Locked),
            ("expires exactly now", with(|f| f.expires_at = at("2026-11-25T15:00:00Z")), LinkState::Expired),
            ("a millisecond left", with(|f| f.expires_at = at("2026-11-25T15:00:00.001Z")), LinkState::Usable),
            ("used", with(|f| f.used = true), LinkState::Used),
            ("patient activated by another link", with(|f| f.patient_activated = true), LinkState::Used),
            ("activated beats locked", with(|f| { f.patient_activated = true; f.identity_failures = 9 }), LinkState::Used),
            ("locked beats expired", with(|f| { f.identity_failures = 5; f.expires_at = at("2020-01-01T00:00:00Z") }), LinkState::Locked),
            ("deceased", with(|f| f.patient_deceased = true), LinkState::Expired),
            ("merged away", with(|f| f.patient_merged = true), LinkState::Expired),
            ("revoked by a merge", with(|f| f.revoked = true), LinkState::Expired),
            ("email changed", with(|f| f.patient_email = Some("new@example.org")), LinkState::Expired),
            ("email removed", with(|f| f.patient_email = None), LinkState::Expired),
            ("cell phone changed", with(|f| { f.sent_to = "+16175550100"; f.patient_cell_phone = Some("+16175550199") }), LinkState::Expired),
            ("sent to nothing", with(|f| f.sent_to = ""), LinkState::Expired),
        ];
        for (name, facts, want) in cases {
            assert_eq!(link_state(&facts, &rules, now), want, "{name}");
        }
    }

    #[test]
    #[rustfmt::skip]
    fn r10_identity_needs_both_answers() {
        let dob = Date::new(1990, 7, 4).ok();
        let cases = [
            ("1990-07-04", "10027", dob, Some("10027"), true),
            ("07/04/1990", " 10027 ", dob, Some("10027"), true),
            ("7/4/1990", "10027", dob, Some("10027-1234"), true),
            ("1990-07-04", "10027-1234", dob, Some("10027"), true),
            ("1990-07-05", "10027", dob, Some("10027"), false),
            ("1990-07-04", "10028", dob, Some("10027"), false),
            ("1990-07-05", "10028", dob, Some("10027"), false),
            ("", "", dob, Some("10027"), false),
            ("1990-07-04", "1002", dob, Some("10027"), false),
            ("1990-07-04", "10027x", dob, Some("10027"), false),
            ("04/07/1990", "10027", dob, Some("10027"), false),
            // A two-digit year is not guessed at, and nothing may follow the year.
            ("07/04/90", "10027", dob, Some("10027"), false),
            ("07/04/1990/1", "10027", dob, Some("10027"), false),
            // After the five digits only a ZIP+4 (a dash and four digits).
            ("1990-07-04", "10027-", dob, Some("10027"), false),
            ("1990-07-04", "10027 1234", dob, Some("10027"), false),
            ("1990-07-04", "10027-12345", dob, Some("10027"), false),
            ("1990-07-04", "10027-12x4", dob, Some("10027"), false),
            ("1990-07-04", "10027", None, Some("10027"), false),
            ("1990-07-04", "10027", dob, None, false),
        ];
        for (entered_dob, entered_zip, chart_dob, chart_zip, want) in cases {
            assert_eq!(identity_matches(entered_dob, entered_zip, chart_dob, chart_zip), want,
                "{entered_dob:?} {entered_zip:?} against {chart_dob:?} {chart_zip:?}");
        }
    }

    #[test]
    fn r10_code_lives_ten_minutes_and_a_few_tries() {
        let rules = ActivationRules::default();
        let sent = at("2026-11-25T15:00:00Z");
        let cases = [
            (0, "2026-11-25T15:09:59Z", CodeState::Open),
            (0, "2026-11-25T15:10:00Z", CodeState::Expired),
            (4, "2026-11-25T15:01:00Z", CodeState::Open),
            (5, "2026-11-25T15:01:00Z", CodeState::Spent),
            (5, "2026-11-25T16:00:00Z", CodeState::Spent),
        ];
        for (failures, now, want) in cases {
            assert_eq!(
                code_state(sent, failures, &rules, at(now)),
                want,
                "{failures} at {now}"
            );
        }
    }

    #[test]
    fn r10_usernames() {
        assert_eq!(
            normalize_username(" Rosa@Example.org "),
            Ok("rosa@example.org".to_string())
        );
        assert_eq!(normalize_username("ab"), Err(UsernameProblem::TooShort));
        assert_eq!(normalize_username("abc"), Ok("abc".to_string()));
        assert_eq!(normalize_username(&"a".repeat(64)), Ok("a".repeat(64)));
        assert_eq!(
            normalize_username(&"a".repeat(65)),
            Err(UsernameProblem::TooLong)
        );
        assert_eq!(
            normalize_username("rosa parks"),
            Err(UsernameProblem::BadCharacters)
        );
        assert_eq!(
            username_candidates(Some("Family@Example.org"), Some("Ana María"))[..3],
            [
                "family@example.org",
                "anamaría.family@example.org",
                "family@example.org.2"
            ]
        );
        assert!(username_candidates(None, Some("Ana")).is_empty());
    }
}
