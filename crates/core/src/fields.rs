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

    /// A copy with every value trimmed, blank values turned into `None`, and
    /// values that parse written in their canonical form (E.164 phone,
    /// upper-case birth sex code, lower-case email domain). Values that do not
    /// parse are kept as given so nothing the source sent is lost.
    pub fn normalized(&self) -> Demographics {
        // Each field is normalised on its own: a bad ZIP must not stop the
        // phone from being canonicalised, and nothing depends on "today"
        // (a future date of birth is still the same text).
        Demographics {
            first_name: normalize(&self.first_name, |v| {
                PersonName::parse(v).map(|n| n.0)
            }),
            last_name: normalize(&self.last_name, |v| PersonName::parse(v).map(|n| n.0)),
            date_of_birth: normalize(&self.date_of_birth, |v| {
                parse_iso_date(v).map(|d| d.to_string())
            }),
            birth_sex: normalize(&self.birth_sex, |v| {
                BirthSex::parse(v).map(|s| s.code().to_string())
            }),
            zip: normalize(&self.zip, |v| Zip::parse(v).map(|z| z.0)),
            email: normalize(&self.email, |v| EmailAddress::parse(v).map(|e| e.0)),
            cell_phone: normalize(&self.cell_phone, |v| E164Phone::parse(v).map(|p| p.0)),
        }
    }
}

/// Trims `value`, drops it when blank, and writes it canonically when
/// `canonical` accepts it (otherwise keeps the trimmed text).
fn normalize(
    value: &Option<String>,
    canonical: impl Fn(&str) -> Result<String, Problem>,
) -> Option<String> {
    let trimmed = value.as_deref().map(str::trim).filter(|v| !v.is_empty())?;
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
    fn invalid(words: &str) -> Problem {
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
    /// The first five digits, what identity checks compare.
    pub fn five(&self) -> &str {
        &self.0[..5]
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
        E::UnsupportedDisplayName | E::MissingDisplayName | E::MissingEndBracket => {
            "must be the bare address, without a name or angle brackets"
        }
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

/// R1 for the date of birth: a real date, not after `today`, and not
/// before `today` minus 130 years (a typo such as 1802 for 1982).
fn parse_date_of_birth(raw: &str, today: Date) -> Result<Date, Problem> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(Problem::Missing);
    }
    let date = parse_iso_date(trimmed)?;
    if date > today {
        return Err(Problem::invalid("is in the future"));
    }
    // `checked_sub` clamps Feb 29 to Feb 28 in a common year; if `today` is
    // so close to the calendar's start that it overflows, every date is fine.
    let earliest = today.checked_sub(jiff::Span::new().years(MAX_AGE_YEARS));
    if let Ok(earliest) = earliest
        && date < earliest
    {
        return Err(Problem::invalid("is more than 130 years ago"));
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
    fn take<T>(problems: &mut Vec<FieldProblem>, field: Field, result: Result<T, Problem>) -> Option<T> {
        result
            .map_err(|problem| problems.push(FieldProblem { field, problem }))
            .ok()
    }
    let raw = |field: Field| demographics.get(field).unwrap_or("");

    let first_name = take(&mut problems, Field::FirstName, PersonName::parse(raw(Field::FirstName)));
    let last_name = take(&mut problems, Field::LastName, PersonName::parse(raw(Field::LastName)));
    let date_of_birth = take(&mut problems, Field::DateOfBirth,
        parse_date_of_birth(raw(Field::DateOfBirth), today),
    );
    let birth_sex = take(&mut problems, Field::BirthSex, BirthSex::parse(raw(Field::BirthSex)));
    let zip = take(&mut problems, Field::Zip, Zip::parse(raw(Field::Zip)));
    let email = take(&mut problems, Field::Email, EmailAddress::parse(raw(Field::Email)));
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
        (Some(first_name), Some(last_name), Some(date_of_birth), Some(birth_sex), Some(zip), Some(email)) => {
            Some(ValidFields {
                first_name,
                last_name,
                date_of_birth,
                birth_sex,
                zip,
                email,
                cell_phone,
            })
        }
        _ => None,
    };
    Checked { problems, valid }
}
