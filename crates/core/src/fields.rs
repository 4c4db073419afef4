//! R1: the six required fields and the optional cell phone.
//!
//! `Demographics` is what a source (API, HL7, FHIR, CSV) gave us, as text.
//! `check` parses it into `ValidFields` when everything required is there,
//! and names every problem (field + reason) otherwise.

use jiff::civil::Date;
use serde::{Deserialize, Serialize};

/// A demographic field the rules care about. The serde names are the stable
/// keys that API clients see (`"email"`, `"date_of_birth"`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    FirstName,
    LastName,
    DateOfBirth,
    BirthSex,
    Zip,
    Email,
    CellPhone,
}

impl Field {
    /// The six fields an invite needs, in the order staff see them.
    pub const REQUIRED: [Field; 6] = [
        Field::FirstName,
        Field::LastName,
        Field::DateOfBirth,
        Field::BirthSex,
        Field::Zip,
        Field::Email,
    ];

    /// Every field, required ones first, in the order staff see them.
    pub const ALL: [Field; 7] = [
        Field::FirstName,
        Field::LastName,
        Field::DateOfBirth,
        Field::BirthSex,
        Field::Zip,
        Field::Email,
        Field::CellPhone,
    ];

    /// Stable machine key, identical to the serde name.
    pub fn key(self) -> &'static str {
        match self {
            Field::FirstName => "first_name",
            Field::LastName => "last_name",
            Field::DateOfBirth => "date_of_birth",
            Field::BirthSex => "birth_sex",
            Field::Zip => "zip",
            Field::Email => "email",
            Field::CellPhone => "cell_phone",
        }
    }

    /// Words for staff: "first name", "date of birth", "ZIP code", ...
    pub fn label(self) -> &'static str {
        match self {
            Field::FirstName => "first name",
            Field::LastName => "last name",
            Field::DateOfBirth => "date of birth",
            Field::BirthSex => "birth sex",
            Field::Zip => "ZIP code",
            Field::Email => "email address",
            Field::CellPhone => "cell phone",
        }
    }

    /// The label of a form field or a list item: "First name", "ZIP code".
    pub fn heading(self) -> &'static str {
        match self {
            Field::FirstName => "First name",
            Field::LastName => "Last name",
            Field::DateOfBirth => "Date of birth",
            Field::BirthSex => "Birth sex",
            Field::Zip => "ZIP code",
            Field::Email => "Email address",
            Field::CellPhone => "Cell phone",
        }
    }

    /// `value` in the form the store keeps it (E.164 phone, upper-case
    /// birth sex code, lower-case email domain, ISO date), or why this
    /// field cannot hold it. Nothing depends on "today": a future date of
    /// birth is still the same text.
    pub fn canonical(self, value: &str) -> Result<String, Problem> {
        match self {
            Field::FirstName | Field::LastName => PersonName::parse(value).map(|n| n.0),
            Field::DateOfBirth => parse_iso_date(value).map(|d| d.to_string()),
            Field::BirthSex => BirthSex::parse(value).map(|s| s.code().to_string()),
            Field::Zip => Zip::parse(value).map(|z| z.0),
            Field::Email => EmailAddress::parse(value).map(|e| e.0),
            Field::CellPhone => E164Phone::parse(value).map(|p| p.0),
        }
    }

    /// True for the six fields of R1 that an invite cannot go without; the
    /// cell phone is optional (an invalid one is reported but never blocks).
    pub fn is_required(self) -> bool {
        self != Field::CellPhone
    }
}

/// Demographics as a source gave them. Every field is optional text;
/// `date_of_birth` is ISO `YYYY-MM-DD`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Demographics {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub date_of_birth: Option<String>,
    pub birth_sex: Option<String>,
    pub zip: Option<String>,
    pub email: Option<String>,
    pub cell_phone: Option<String>,
}

impl Demographics {
    /// The value of one field as given (not trimmed).
    pub fn get(&self, field: Field) -> Option<&str> {
        let value = match field {
            Field::FirstName => &self.first_name,
            Field::LastName => &self.last_name,
            Field::DateOfBirth => &self.date_of_birth,
            Field::BirthSex => &self.birth_sex,
            Field::Zip => &self.zip,
            Field::Email => &self.email,
            Field::CellPhone => &self.cell_phone,
        };
        value.as_deref()
    }

    /// Sets one field (`None` removes it).
    pub fn set(&mut self, field: Field, value: Option<String>) {
        *self.slot_mut(field) = value;
    }

    fn slot_mut(&mut self, field: Field) -> &mut Option<String> {
        match field {
            Field::FirstName => &mut self.first_name,
            Field::LastName => &mut self.last_name,
            Field::DateOfBirth => &mut self.date_of_birth,
            Field::BirthSex => &mut self.birth_sex,
            Field::Zip => &mut self.zip,
            Field::Email => &mut self.email,
            Field::CellPhone => &mut self.cell_phone,
        }
    }

    /// This record updated by a partial one, as an HL7 update means it: a
    /// field `sent` replaces ours, a field not sent (`None`) keeps ours, and
    /// a field in `cleared` (sent as the HL7 null `""`) is removed.
    pub fn overlaid(&self, sent: &Demographics, cleared: &[Field]) -> Demographics {
        let mut merged = self.clone();
        for field in Field::ALL {
            if let Some(value) = sent.get(field) {
                *merged.slot_mut(field) = Some(value.to_string());
            }
        }
        for &field in cleared {
            *merged.slot_mut(field) = None;
        }
        merged
    }

    /// A copy with every value trimmed, blank values turned into `None`, and
    /// values that parse written in their canonical form (E.164 phone,
    /// upper-case birth sex code, lower-case email domain). Values that do not
    /// parse are kept as given so nothing the source sent is lost.
    pub fn normalized(&self) -> Demographics {
        // Each field is normalised on its own: a bad ZIP must not stop the
        // phone from being canonicalised, and nothing depends on "today"
        // (a future date of birth is still the same text).
        let mut normalized = Demographics::default();
        for field in Field::ALL {
            normalized.set(field, normalize(self.get(field), |v| field.canonical(v)));
        }
        normalized
    }
}

/// Trims `value`, drops it when blank, and writes it canonically when
/// `canonical` accepts it (otherwise keeps the trimmed text).
fn normalize(
    value: Option<&str>,
    canonical: impl Fn(&str) -> Result<String, Problem>,
) -> Option<String> {
    let trimmed = value.map(str::trim).filter(|v| !v.is_empty())?;
    Some(canonical(trimmed).unwrap_or_else(|_| trimmed.to_string()))
}

/// Why a field is not complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", content = "detail", rename_all = "snake_case")]
pub enum Problem {
    Missing,
    /// Present but not valid; the text says what is wrong in words. It never
    /// repeats the value itself: these texts reach logs, and the value is PHI.
    Invalid(String),
}

impl Problem {
    pub(crate) fn invalid(words: &str) -> Problem {
        Problem::Invalid(words.to_string())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldProblem {
    pub field: Field,
    pub problem: Problem,
}

impl FieldProblem {
    /// One sentence for staff, e.g. "email address is missing" or
    /// "date of birth is invalid: it is in the future". Never contains the
    /// value (minimum necessary, R12: messages end up in logs).
    pub fn message(&self) -> String {
        match &self.problem {
            Problem::Missing => format!("{} is missing", self.field.label()),
            Problem::Invalid(why) => format!("{} is invalid: {why}", self.field.label()),
        }
    }
}

/// A non-blank name, trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonName(String);

impl PersonName {
    /// Trims the name; blank (empty or whitespace only) is `Missing`, since
    /// a blank name is what sources send when they have none.
    pub fn parse(raw: &str) -> Result<PersonName, Problem> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(Problem::Missing);
        }
        if trimmed.chars().any(char::is_control) {
            return Err(Problem::invalid("contains control characters"));
        }
        Ok(PersonName(trimmed.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A stored E.164 number as people write it: "(617) 555-0100" for a North
/// American one, any other as stored.
pub fn phone_for_people(e164: &str) -> String {
    match e164.strip_prefix("+1") {
        Some(digits) if digits.len() == 10 && digits.bytes().all(|b| b.is_ascii_digit()) => {
            format!("({}) {}-{}", &digits[..3], &digits[3..6], &digits[6..])
        }
        _ => e164.to_string(),
    }
}

/// US Core birth sex code: F, M, or UNK (only when the source explicitly
/// recorded "unknown").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BirthSex {
    #[serde(rename = "F")]
    Female,
    #[serde(rename = "M")]
    Male,
    #[serde(rename = "UNK")]
    Unknown,
}

impl BirthSex {
    /// Accepts F, M, UNK and the words female, male, unknown, any case.
    /// Anything else (including HL7's "U", "O", "A", "N") is invalid: R1
    /// allows UNK only when a source explicitly recorded "unknown", and
    /// mapping other codes is the job of the source's adapter.
    pub fn parse(raw: &str) -> Result<BirthSex, Problem> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(Problem::Missing);
        }
        match trimmed.to_ascii_lowercase().as_str() {
            "f" | "female" => Ok(BirthSex::Female),
            "m" | "male" => Ok(BirthSex::Male),
            "unk" | "unknown" => Ok(BirthSex::Unknown),
            _ => Err(Problem::invalid(
                "is not one of F, M or UNK (female, male or unknown)",
            )),
        }
    }
    /// The US Core code, as stored and sent: "F", "M" or "UNK".
    pub fn code(self) -> &'static str {
        match self {
            BirthSex::Female => "F",
            BirthSex::Male => "M",
            BirthSex::Unknown => "UNK",
        }
    }
}

/// A US ZIP code: 5 digits or ZIP+4 (`12345-6789`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zip(String);

impl Zip {
    /// Accepts `12345`, `12345-6789` and `123456789` (written back as
    /// `12345-6789`), after trimming. Only ASCII digits count.
    pub fn parse(raw: &str) -> Result<Zip, Problem> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(Problem::Missing);
        }
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        let bytes = trimmed.as_bytes();
        match bytes.len() {
            5 if digits(trimmed) => Ok(Zip(trimmed.to_string())),
            9 if digits(trimmed) => Ok(Zip(format!("{}-{}", &trimmed[..5], &trimmed[5..]))),
            10 if bytes[5] == b'-' && digits(&trimmed[..5]) && digits(&trimmed[6..]) => {
                Ok(Zip(trimmed.to_string()))
            }
            _ => Err(Problem::invalid(
                "is not a US ZIP code (expected 5 digits or ZIP+4 such as 12345-6789)",
            )),
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An email address accepted by a real address parser, with a dotted domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailAddress(String);

impl EmailAddress {
    /// Parses with the `email_address` crate (RFC 5322 addr-spec), and on
    /// top of it requires what a deliverable patient address has: no display
    /// name (`Jo <jo@x.org>`), no IP-literal domain, a dot in the domain, no
    /// whitespace. The canonical form lower-cases the domain only: the local
    /// part is case-sensitive in principle, so it is kept as given.
    pub fn parse(raw: &str) -> Result<EmailAddress, Problem> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(Problem::Missing);
        }
        if trimmed.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Problem::invalid("contains spaces"));
        }
        let options = email_address::Options::default()
            .with_required_tld()
            .without_domain_literal()
            .without_display_text();
        let parsed = email_address::EmailAddress::parse_with_options(trimmed, options)
            .map_err(|e| Problem::Invalid(email_error_words(&e).to_string()))?;
        let domain = parsed.domain();
        if !domain.contains('.') {
            return Err(Problem::invalid("the domain after @ has no dot"));
        }
        Ok(EmailAddress(format!(
            "{}@{}",
            parsed.local_part(),
            domain.to_lowercase()
        )))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Staff words for the parser's errors. We do not use the crate's own
/// `Display`, so that no future version can slip the address into a log.
fn email_error_words(error: &email_address::Error) -> &'static str {
    use email_address::Error as E;
    match error {
        E::MissingSeparator => "is not an email address (no @)",
        E::LocalPartEmpty => "has nothing before the @",
        E::LocalPartTooLong => "has more than 64 characters before the @",
        E::DomainEmpty => "has nothing after the @",
        E::DomainTooLong => "has a domain that is too long",
        E::SubDomainEmpty => "has an empty part in its domain (two dots in a row?)",
        E::SubDomainTooLong => "has a domain part longer than 63 characters",
        E::DomainTooFew => "the domain after @ has no dot",
        E::UnsupportedDomainLiteral => "uses an IP address instead of a domain",
        // No arm for the display-name errors: the parser only sees a display
        // name after a space (`Jo <jo@x.org>`), and `parse` refuses spaces
        // before it asks; `<jo@x.org>` is an invalid character to it.
        _ => "is not a valid email address",
    }
}

/// A phone number in E.164 form (`+16175550123`); numbers without a country
/// code are read as US numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct E164Phone(String);

impl E164Phone {
    /// Parses with libphonenumber's rules (US as the default region) and
    /// accepts only numbers the metadata calls valid, so SMS is never sent
    /// to a number that cannot exist.
    pub fn parse(raw: &str) -> Result<E164Phone, Problem> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(Problem::Missing);
        }
        let number = phonenumber::parse(Some(phonenumber::country::Id::US), trimmed)
            .map_err(|_| Problem::invalid("is not a phone number"))?;
        if !phonenumber::is_valid(&number) {
            return Err(Problem::invalid("is not a valid phone number"));
        }
        if number.extension().is_some() {
            return Err(Problem::invalid(
                "has an extension, which cannot receive text messages",
            ));
        }
        Ok(E164Phone(
            number.format().mode(phonenumber::Mode::E164).to_string(),
        ))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Reads `YYYY-MM-DD` strictly (4-digit year, 2-digit month and day), the
/// only form sources are documented to send; anything else is a problem for
/// staff to fix rather than a guess (is 03/04 March or April?).
fn parse_iso_date(raw: &str) -> Result<Date, Problem> {
    const SHAPE: &str = "is not a date in the form YYYY-MM-DD";
    let b = raw.as_bytes();
    let shape_ok = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape_ok {
        return Err(Problem::invalid(SHAPE));
    }
    let number = |s: &str| s.parse::<i16>().map_err(|_| Problem::invalid(SHAPE));
    let (year, month, day) = (number(&raw[..4])?, number(&raw[5..7])?, number(&raw[8..])?);
    let (Ok(month), Ok(day)) = (i8::try_from(month), i8::try_from(day)) else {
        return Err(Problem::invalid(SHAPE));
    };
    Date::new(year, month, day)
        .map_err(|_| Problem::invalid("is not a real date (expected YYYY-MM-DD)"))
}

/// The oldest age R1 accepts.
pub const MAX_AGE_YEARS: i16 = 130;

/// R1 for the date of birth: a real date, not after `today`, and an age
/// of at most 130 (completed years) on `today`, which catches typos such as
/// 1802 for 1982.
///
/// "Age <= 130" is the age people state: someone is 130 until the day
/// before their 131st birthday, so a date of birth is rejected only once
/// that birthday has come.
fn parse_date_of_birth(raw: &str, today: Date) -> Result<Date, Problem> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(Problem::Missing);
    }
    let date = parse_iso_date(trimmed)?;
    if date > today {
        return Err(Problem::invalid("is in the future"));
    }
    // `checked_add` puts the birthday of Feb 29 on Feb 28 in a common year;
    // a birthday past the calendar's end has not come yet.
    let too_old_from = date.checked_add(jiff::Span::new().years(MAX_AGE_YEARS + 1));
    if let Ok(too_old_from) = too_old_from
        && too_old_from <= today
    {
        return Err(Problem::invalid("gives an age over 130 years"));
    }
    Ok(date)
}

/// Everything an invite needs, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidFields {
    pub first_name: PersonName,
    pub last_name: PersonName,
    pub date_of_birth: Date,
    pub birth_sex: BirthSex,
    pub zip: Zip,
    pub email: EmailAddress,
    pub cell_phone: Option<E164Phone>,
}

/// The outcome of R1 for one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// Every problem, required fields first in `Field::REQUIRED` order, then
    /// an invalid cell phone (which does not block an invite).
    pub problems: Vec<FieldProblem>,
    /// `Some` when all six required fields are complete.
    pub valid: Option<ValidFields>,
}

impl Checked {
    /// Only the problems that block an invite (required fields).
    pub fn blocking(&self) -> Vec<FieldProblem> {
        self.problems
            .iter()
            .filter(|p| p.field.is_required())
            .cloned()
            .collect()
    }

    /// True when all six required fields are complete (an invalid cell
    /// phone does not matter).
    pub fn is_complete(&self) -> bool {
        self.valid.is_some()
    }

    /// The problem with one field, if any.
    pub fn problem(&self, field: Field) -> Option<&Problem> {
        self.problems
            .iter()
            .find(|p| p.field == field)
            .map(|p| &p.problem)
    }
}

/// R1. `today` is the practice's local date (for "not in the future" and
/// "age <= 130").
pub fn check(demographics: &Demographics, today: Date) -> Checked {
    let mut problems = Vec::new();
    /// Keeps the value, or records the problem (blank is Missing in every
    /// parser, and an absent value reads as blank).
    fn take<T>(
        problems: &mut Vec<FieldProblem>,
        field: Field,
        result: Result<T, Problem>,
    ) -> Option<T> {
        result
            .map_err(|problem| problems.push(FieldProblem { field, problem }))
            .ok()
    }
    let raw = |field: Field| demographics.get(field).unwrap_or("");

    let first_name = take(
        &mut problems,
        Field::FirstName,
        PersonName::parse(raw(Field::FirstName)),
    );
    let last_name = take(
        &mut problems,
        Field::LastName,
        PersonName::parse(raw(Field::LastName)),
    );
    let date_of_birth = take(
        &mut problems,
        Field::DateOfBirth,
        parse_date_of_birth(raw(Field::DateOfBirth), today),
    );
    let birth_sex = take(
        &mut problems,
        Field::BirthSex,
        BirthSex::parse(raw(Field::BirthSex)),
    );
    let zip = take(&mut problems, Field::Zip, Zip::parse(raw(Field::Zip)));
    let email = take(
        &mut problems,
        Field::Email,
        EmailAddress::parse(raw(Field::Email)),
    );
    // Optional: blank means "no cell phone", not a problem; an invalid one
    // is reported (never silently dropped) but does not block.
    let cell_phone = match E164Phone::parse(raw(Field::CellPhone)) {
        Ok(phone) => Some(phone),
        Err(Problem::Missing) => None,
        Err(problem) => {
            problems.push(FieldProblem {
                field: Field::CellPhone,
                problem,
            });
            None
        }
    };

    let valid = match (first_name, last_name, date_of_birth, birth_sex, zip, email) {
        (
            Some(first_name),
            Some(last_name),
            Some(date_of_birth),
            Some(birth_sex),
            Some(zip),
            Some(email),
        ) => Some(ValidFields {
            first_name,
            last_name,
            date_of_birth,
            birth_sex,
            zip,
            email,
            cell_phone,
        }),
        _ => None,
    };
    Checked { problems, valid }
}

#[cfg(test)]
mod overlay_tests {
    use super::*;

    #[test]
    fn an_update_keeps_fields_not_sent_replaces_sent_ones_and_clears_nulled_ones() {
        let ours = Demographics {
            first_name: Some("Ana".into()),
            last_name: Some("Lopez".into()),
            email: Some("ana@example.org".into()),
            cell_phone: Some("+12025550123".into()),
            ..Demographics::default()
        };
        let sent = Demographics {
            last_name: Some("Lopez-Diaz".into()),
            zip: Some("10001".into()),
            ..Demographics::default()
        };
        let merged = ours.overlaid(&sent, &[Field::CellPhone]);
        assert_eq!(merged.first_name.as_deref(), Some("Ana"));
        assert_eq!(merged.last_name.as_deref(), Some("Lopez-Diaz"));
        assert_eq!(merged.zip.as_deref(), Some("10001"));
        assert_eq!(merged.email.as_deref(), Some("ana@example.org"));
        assert_eq!(merged.cell_phone, None);
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_heading_is_the_label_starting_with_a_capital() {
        for field in Field::ALL {
            let label = field.label();
            let mut chars = label.chars();
            let capital: String = chars
                .next()
                .map(|c| c.to_uppercase().chain(chars).collect())
                .unwrap_or_default();
            assert_eq!(field.heading(), capital, "{label}");
        }
    }

    use super::*;
    use jiff::civil::date;

    /// The practice's local date in every R1 test.
    const TODAY: Date = date(2026, 11, 25);

    /// A record with all six required fields complete and no cell phone.
    fn complete() -> Demographics {
        Demographics {
            first_name: Some("Ada".into()),
            last_name: Some("Lovelace".into()),
            date_of_birth: Some("1985-12-10".into()),
            birth_sex: Some("F".into()),
            zip: Some("02139".into()),
            email: Some("ada@example.org".into()),
            cell_phone: None,
        }
    }

    fn with(field: Field, value: Option<&str>) -> Demographics {
        let mut d = complete();
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

    #[test]
    fn r1_complete_record_is_valid() {
        let checked = check(&complete(), TODAY);
        assert_eq!(checked.problems, vec![]);
        assert!(checked.is_complete());
        let valid = checked.valid.unwrap();
        assert_eq!(valid.first_name.as_str(), "Ada");
        assert_eq!(valid.last_name.as_str(), "Lovelace");
        assert_eq!(valid.date_of_birth, date(1985, 12, 10));
        assert_eq!(valid.birth_sex, BirthSex::Female);
        assert_eq!(valid.zip.as_str(), "02139");
        assert_eq!(valid.email.as_str(), "ada@example.org");
        assert_eq!(valid.cell_phone, None);
    }

    /// R1: each required field absent, empty or blank is `Missing`, named,
    /// blocking, and the message uses the field's label.
    #[test]
    fn r1_each_required_field_missing() {
        for field in Field::REQUIRED {
            for (row, value) in [
                ("absent", None),
                ("empty", Some("")),
                ("blank", Some(" \t ")),
            ] {
                let name = format!("{} {row}", field.key());
                let checked = check(&with(field, value), TODAY);
                let expected = vec![FieldProblem {
                    field,
                    problem: Problem::Missing,
                }];
                assert_eq!(checked.problems, expected, "{name}");
                assert_eq!(checked.blocking(), expected, "{name}");
                assert!(!checked.is_complete(), "{name}");
                assert_eq!(checked.problem(field), Some(&Problem::Missing), "{name}");
                let message = checked.problems[0].message();
                assert_eq!(message, format!("{} is missing", field.label()), "{name}");
            }
        }
    }

    /// R1: present but invalid values. `reason` is a fragment the staff
    /// words must contain (`None`: any reason).
    #[test]
    fn r1_invalid_values() {
        #[rustfmt::skip]
        let rows: &[(&str, Field, &str, Option<&str>)] = &[
            ("email without domain", Field::Email, "bob@", Some("nothing after the @")),
            ("email without @", Field::Email, "no-at-sign", Some("no @")),
            ("email with a space", Field::Email, "bob smith@example.org", Some("spaces")),
            ("email with a tab", Field::Email, "bob\t@example.org", Some("spaces")),
            ("email without local part", Field::Email, "@example.org", Some("nothing before the @")),
            ("email domain without dot", Field::Email, "bob@localhost", Some("no dot")),
            ("email IP literal", Field::Email, "bob@[192.168.0.1]", None),
            ("email double dot", Field::Email, "bob@example..org", None),
            ("email two @", Field::Email, "bob@@example.org", None),
            ("email display name", Field::Email, "<bob@example.org>", Some("not a valid email address")),
            ("email display name with a space", Field::Email, "Bob <bob@example.org>", Some("spaces")),
            ("zip four digits", Field::Zip, "1234", Some("not a US ZIP code")),
            ("zip letters", Field::Zip, "ABCDE", Some("not a US ZIP code")),
            ("zip six digits", Field::Zip, "123456", Some("not a US ZIP code")),
            ("zip+4 short", Field::Zip, "12345-678", Some("not a US ZIP code")),
            ("zip+4 with space", Field::Zip, "12345 6789", Some("not a US ZIP code")),
            ("zip+4 dash misplaced", Field::Zip, "1234-56789", Some("not a US ZIP code")),
            ("zip fullwidth digits", Field::Zip, "\u{ff11}\u{ff12}\u{ff13}\u{ff14}\u{ff15}", Some("not a US ZIP code")),
            ("zip non-ASCII 10 bytes", Field::Zip, "1234\u{e9}6789", Some("not a US ZIP code")),
            ("dob tomorrow", Field::DateOfBirth, "2026-11-26", Some("in the future")),
            ("dob next year", Field::DateOfBirth, "2027-01-01", Some("in the future")),
            ("dob 30 February", Field::DateOfBirth, "1990-02-30", Some("not a real date")),
            ("dob 29 February common year", Field::DateOfBirth, "1991-02-29", Some("not a real date")),
            ("dob month 13", Field::DateOfBirth, "1990-13-01", Some("not a real date")),
            ("dob day 00", Field::DateOfBirth, "1990-01-00", Some("not a real date")),
            ("dob US format", Field::DateOfBirth, "03/04/1990", Some("YYYY-MM-DD")),
            ("dob short parts", Field::DateOfBirth, "1990-1-5", Some("YYYY-MM-DD")),
            ("dob with time", Field::DateOfBirth, "1990-01-05T00:00", Some("YYYY-MM-DD")),
            ("dob words", Field::DateOfBirth, "yesterday!", Some("YYYY-MM-DD")),
            ("dob 131 years old", Field::DateOfBirth, "1895-11-25", Some("130")),
            ("dob typo 1802", Field::DateOfBirth, "1802-06-01", Some("130")),
            ("birth sex HL7 U", Field::BirthSex, "U", Some("F, M or UNK")),
            ("birth sex HL7 O", Field::BirthSex, "O", Some("F, M or UNK")),
            ("birth sex HL7 A", Field::BirthSex, "A", Some("F, M or UNK")),
            ("birth sex X", Field::BirthSex, "X", Some("F, M or UNK")),
            ("birth sex misspelt", Field::BirthSex, "femal", Some("F, M or UNK")),
            ("birth sex other", Field::BirthSex, "other", Some("F, M or UNK")),
            ("first name control char", Field::FirstName, "Ada\u{7}", Some("control")),
            ("last name newline", Field::LastName, "Love\nlace", Some("control")),
        ];
        for &(name, field, value, reason) in rows {
            let checked = check(&with(field, Some(value)), TODAY);
            assert_eq!(checked.problems.len(), 1, "{name}: {:?}", checked.problems);
            let problem = &checked.problems[0];
            assert_eq!(problem.field, field, "{name}");
            let Problem::Invalid(words) = &problem.problem else {
                panic!("{name}: expected Invalid, got {:?}", problem.problem);
            };
            assert!(!words.is_empty(), "{name}");
            if let Some(reason) = reason {
                assert!(words.contains(reason), "{name}: {words:?} lacks {reason:?}");
            }
            assert_eq!(
                checked.blocking(),
                checked.problems,
                "{name}: required field blocks"
            );
            assert!(checked.valid.is_none(), "{name}");
            let message = problem.message();
            assert!(
                message.starts_with(&format!("{} is invalid: ", field.label())),
                "{name}: {message:?}"
            );
        }
    }

    /// R1: accepted values and the canonical form they are kept in.
    #[test]
    fn r1_accepted_values_and_canonical_form() {
        #[rustfmt::skip]
        let rows: &[(&str, Field, &str, &str)] = &[
            ("zip 5", Field::Zip, "02139", "02139"),
            ("zip 5 padded", Field::Zip, " 02139 ", "02139"),
            ("zip+4", Field::Zip, "12345-6789", "12345-6789"),
            ("zip 9 digits", Field::Zip, "123456789", "12345-6789"),
            ("email domain lower-cased, local kept", Field::Email, " Ada.L@Example.ORG ", "Ada.L@example.org"),
            ("email plus tag", Field::Email, "ada+portal@mail.example.org", "ada+portal@mail.example.org"),
            ("birth sex f", Field::BirthSex, "f", "F"),
            ("birth sex female", Field::BirthSex, "Female", "F"),
            ("birth sex M", Field::BirthSex, "M", "M"),
            ("birth sex male", Field::BirthSex, " MALE ", "M"),
            ("birth sex UNK", Field::BirthSex, "UNK", "UNK"),
            ("birth sex unknown", Field::BirthSex, "unknown", "UNK"),
            ("dob today", Field::DateOfBirth, "2026-11-25", "2026-11-25"),
            ("dob padded", Field::DateOfBirth, " 1985-12-10 ", "1985-12-10"),
            ("dob 29 February leap year", Field::DateOfBirth, "2000-02-29", "2000-02-29"),
            ("dob exactly 130 years", Field::DateOfBirth, "1896-11-25", "1896-11-25"),
            ("dob aged 130, a day before 131", Field::DateOfBirth, "1895-11-26", "1895-11-26"),
            ("first name trimmed", Field::FirstName, "  Mary Ann ", "Mary Ann"),
            ("last name non-ASCII", Field::LastName, "Ó Briain", "Ó Briain"),
        ];
        for &(name, field, value, canonical) in rows {
            let record = with(field, Some(value));
            let checked = check(&record, TODAY);
            assert_eq!(checked.problems, vec![], "{name}");
            let valid = checked.valid.expect(name);
            let kept = match field {
                Field::FirstName => valid.first_name.as_str().to_string(),
                Field::LastName => valid.last_name.as_str().to_string(),
                Field::DateOfBirth => valid.date_of_birth.to_string(),
                Field::BirthSex => valid.birth_sex.code().to_string(),
                Field::Zip => valid.zip.as_str().to_string(),
                Field::Email => valid.email.as_str().to_string(),
                Field::CellPhone => unreachable!(),
            };
            assert_eq!(kept, canonical, "{name}: parsed value");
            assert_eq!(
                record.normalized().get(field),
                Some(canonical),
                "{name}: normalized()"
            );
        }
    }

    /// R1: the cell phone is optional; an invalid one is reported, never
    /// dropped silently, and never blocks; a valid one is kept as E.164.
    #[test]
    fn r1_cell_phone() {
        // (name, value, Ok(E.164 kept) or Err(fragment of the reason))
        type Row<'a> = (&'a str, Option<&'a str>, Result<Option<&'a str>, &'a str>);
        #[rustfmt::skip]
        let rows: &[Row<'_>] = &[
            ("absent", None, Ok(None)),
            ("empty", Some(""), Ok(None)),
            ("blank", Some("   "), Ok(None)),
            ("US with punctuation", Some("(617) 253-1000"), Ok(Some("+16172531000"))),
            ("US dashes", Some("617-253-1000"), Ok(Some("+16172531000"))),
            ("US with +1", Some("+1 617 253 1000"), Ok(Some("+16172531000"))),
            ("US with leading 1", Some("1-617-253-1000"), Ok(Some("+16172531000"))),
            ("already E.164", Some("+16172531000"), Ok(Some("+16172531000"))),
            ("too short", Some("12"), Err("not a")),
            ("letters", Some("call me"), Err("not a")),
            ("invalid area code", Some("123-456-7890"), Err("not a valid phone number")),
            ("too many digits", Some("617-253-10000"), Err("not a")),
            ("extension", Some("617-253-1000 ext. 12"), Err("extension")),
        ];
        for &(name, value, expected) in rows {
            let checked = check(&with(Field::CellPhone, value), TODAY);
            assert!(checked.is_complete(), "{name}: the cell phone never blocks");
            assert_eq!(checked.blocking(), vec![], "{name}: nothing blocks");
            let valid = checked.valid.as_ref().unwrap();
            match expected {
                Ok(e164) => {
                    assert_eq!(checked.problems, vec![], "{name}");
                    assert_eq!(
                        valid.cell_phone.as_ref().map(E164Phone::as_str),
                        e164,
                        "{name}"
                    );
                }
                Err(reason) => {
                    assert_eq!(valid.cell_phone, None, "{name}");
                    assert_eq!(checked.problems.len(), 1, "{name}: reported");
                    let problem = &checked.problems[0];
                    assert_eq!(problem.field, Field::CellPhone, "{name}");
                    let Problem::Invalid(words) = &problem.problem else {
                        panic!("{name}: expected Invalid, got {:?}", problem.problem);
                    };
                    assert!(words.contains(reason), "{name}: {words:?} lacks {reason:?}");
                    assert!(
                        problem.message().starts_with("cell phone is invalid: "),
                        "{name}"
                    );
                    assert_eq!(
                        checked.problem(Field::CellPhone),
                        Some(&problem.problem),
                        "{name}"
                    );
                }
            }
        }
    }

    /// R1: each way the address parser refuses an email has its own words
    /// for staff (and none of them repeats the address).
    #[test]
    fn r1_each_email_refusal_in_its_own_words() {
        let long_domain = format!("bob@{}org", format!("{}.", "d".repeat(60)).repeat(5));
        #[rustfmt::skip]
        let rows: Vec<(&str, String, &str)> = vec![
            ("local part of 65", format!("{}@example.org", "a".repeat(65)), "more than 64 characters before the @"),
            ("domain over 254", long_domain, "domain that is too long"),
            ("two dots in a row", "bob@example..org".into(), "empty part in its domain"),
            ("a domain label of 64", format!("bob@{}.org", "d".repeat(64)), "longer than 63 characters"),
            ("IP literal", "bob@[192.168.0.1]".into(), "IP address instead of a domain"),
            ("angle brackets", "<bob@example.org>".into(), "is not a valid email address"),
        ];
        for (name, value, words) in rows {
            let problem = EmailAddress::parse(&value).expect_err(name);
            let Problem::Invalid(text) = &problem else {
                panic!("{name}: {problem:?}");
            };
            assert!(text.contains(words), "{name}: {text:?} lacks {words:?}");
            assert!(!text.contains(&value), "{name}: repeats the address");
        }
    }

    #[test]
    fn a_north_american_number_is_shown_as_people_write_it() {
        assert_eq!(phone_for_people("+16175550100"), "(617) 555-0100");
        // Anything else is shown as stored.
        for other in [
            "+442071838750",
            "+1617555010",
            "+161755501000",
            "+1617555010x",
            "",
        ] {
            assert_eq!(phone_for_people(other), other);
        }
    }

    /// Every problem is listed, required fields in the order staff see
    /// them, an invalid cell phone last and not blocking.
    #[test]
    fn r1_every_problem_listed_in_order() {
        let record = Demographics {
            first_name: None,
            last_name: Some("  ".into()),
            date_of_birth: Some("2030-01-01".into()),
            birth_sex: Some("U".into()),
            zip: Some("1234".into()),
            email: Some("bob@".into()),
            cell_phone: Some("12".into()),
        };
        let checked = check(&record, TODAY);
        let fields: Vec<Field> = checked.problems.iter().map(|p| p.field).collect();
        assert_eq!(fields, Field::ALL.to_vec());
        assert_eq!(checked.problems[0].problem, Problem::Missing);
        assert_eq!(checked.problems[1].problem, Problem::Missing);
        assert!(
            checked.problems[2..]
                .iter()
                .all(|p| matches!(p.problem, Problem::Invalid(_)))
        );
        let blocking: Vec<Field> = checked.blocking().iter().map(|p| p.field).collect();
        assert_eq!(blocking, Field::REQUIRED.to_vec());
        assert!(!checked.is_complete());
        assert_eq!(checked.problem(Field::FirstName), Some(&Problem::Missing));
    }

    /// R12: problem texts reach logs, so they never repeat the value.
    #[test]
    fn r1_messages_never_contain_the_value() {
        #[rustfmt::skip]
        let rows: &[(&str, Field, &str)] = &[
            ("email", Field::Email, "priv.ate@"),
            ("email with space", Field::Email, "priv ate@example.org"),
            ("email domain", Field::Email, "private@nodot"),
            ("zip", Field::Zip, "9Z9Z9"),
            ("dob future", Field::DateOfBirth, "2999-07-04"),
            ("dob shape", Field::DateOfBirth, "07/04/1976"),
            ("birth sex", Field::BirthSex, "Xylo"),
            ("cell phone", Field::CellPhone, "555-PRIVATE"),
            ("name", Field::FirstName, "Priv\u{1}ate"),
        ];
        for &(name, field, value) in rows {
            let checked = check(&with(field, Some(value)), TODAY);
            let problem = checked
                .problems
                .iter()
                .find(|p| p.field == field)
                .expect(name);
            let message = problem.message();
            assert!(message.contains(field.label()), "{name}: {message:?}");
            assert!(
                !message.contains(value),
                "{name}: {message:?} repeats the value"
            );
            let json = serde_json::to_string(problem).unwrap();
            assert!(!json.contains(value), "{name}: {json} repeats the value");
        }
    }

    #[test]
    fn field_keys_and_labels() {
        let keys: Vec<&str> = Field::ALL.iter().map(|f| f.key()).collect();
        assert_eq!(
            keys,
            [
                "first_name",
                "last_name",
                "date_of_birth",
                "birth_sex",
                "zip",
                "email",
                "cell_phone"
            ]
        );
        for field in Field::ALL {
            let json = serde_json::to_string(&field).unwrap();
            assert_eq!(
                json,
                format!("\"{}\"", field.key()),
                "{field:?}: serde name is the key"
            );
            assert_eq!(
                field.is_required(),
                Field::REQUIRED.contains(&field),
                "{field:?}"
            );
        }
        let labels: std::collections::BTreeSet<&str> =
            Field::ALL.iter().map(|f| f.label()).collect();
        assert_eq!(labels.len(), Field::ALL.len(), "labels are distinct");
    }

    /// `normalized` keeps what does not parse (trimmed) and drops blanks.
    #[test]
    fn normalized_keeps_unparsable_values() {
        let record = Demographics {
            first_name: Some("  ".into()),
            last_name: None,
            date_of_birth: Some(" 1990-2-3 ".into()),
            birth_sex: Some(" u ".into()),
            zip: Some("1234".into()),
            email: Some("bob@".into()),
            cell_phone: Some(" 617.253.1000 ".into()),
        };
        let expected = Demographics {
            first_name: None,
            last_name: None,
            date_of_birth: Some("1990-2-3".into()),
            birth_sex: Some("u".into()),
            zip: Some("1234".into()),
            email: Some("bob@".into()),
            cell_phone: Some("+16172531000".into()),
        };
        assert_eq!(record.normalized(), expected);
        assert_eq!(expected.normalized(), expected, "idempotent");
    }

    /// Age is counted in completed years (R1: age <= 130), including for
    /// a birthday on 29 February and at the ends of the calendar.
    #[test]
    fn r1_dob_age_limit() {
        #[rustfmt::skip]
        let rows: &[(&str, &str, Date, bool)] = &[
            ("130 today", "1896-11-25", TODAY, true),
            ("130, 131 tomorrow", "1895-11-26", TODAY, true),
            ("131 today", "1895-11-25", TODAY, false),
            ("131 and a day", "1895-11-24", TODAY, false),
            ("born 29 Feb, day before 131st birthday (Feb 28)", "1896-02-29", date(2027, 2, 27), true),
            ("born 29 Feb, 131st birthday on Feb 28", "1896-02-29", date(2027, 2, 28), false),
            ("birthday past the calendar's end", "9999-12-31", date(9999, 12, 31), true),
            ("more than 130 years before 9999", "2000-01-01", date(9999, 12, 31), false),
        ];
        for &(name, dob, today, accepted) in rows {
            match (accepted, parse_date_of_birth(dob, today)) {
                (true, Ok(d)) => assert_eq!(d.to_string(), dob, "{name}"),
                (false, Err(Problem::Invalid(words))) => {
                    assert!(words.contains("130"), "{name}: {words}")
                }
                (_, other) => panic!("{name}: got {other:?}"),
            }
        }
    }
}
