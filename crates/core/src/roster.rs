//! A roster export read as patients: the columns a file's header names,
//! and each row checked and turned into a [`PatientChange`]. The CSV
//! reading itself (quotes, line numbers, streaming) is `enroll_server::roster`;
//! this is the pure part, so the rules of what a roster may say are tested
//! without a file.
//!
//! What a row means: the chart of that MRN as the practice's system holds
//! it at go-live. A value given is written; an empty cell says nothing
//! (an export with a blank cell must not erase what Enroll has). A row
//! whose MRN is blank, or that gives a value its field cannot hold (a date
//! of birth that is no date, an email that is no address), is rejected
//! with its reason in words; the reason never repeats the value, which is
//! PHI and reaches terminals and logs.

use std::collections::BTreeMap;
use std::fmt;

use jiff::civil::Date;

use crate::fields::{Field, Problem};
use crate::intake::PatientChange;
use crate::search::parse_date;

/// What a column of the file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RosterColumn {
    Mrn,
    Field(Field),
    PreferredLanguage,
    /// Named in `--map` as `ignore`: read past.
    Ignored,
}

impl RosterColumn {
    /// The columns a roster must have: the MRN and R1's six fields.
    pub const REQUIRED: [RosterColumn; 7] = [
        RosterColumn::Mrn,
        RosterColumn::Field(Field::FirstName),
        RosterColumn::Field(Field::LastName),
        RosterColumn::Field(Field::DateOfBirth),
        RosterColumn::Field(Field::BirthSex),
        RosterColumn::Field(Field::Zip),
        RosterColumn::Field(Field::Email),
    ];

    /// The canonical header: `mrn`, a field's key, `preferred_language`.
    pub fn key(self) -> &'static str {
        match self {
            RosterColumn::Mrn => "mrn",
            RosterColumn::Field(field) => field.key(),
            RosterColumn::PreferredLanguage => "preferred_language",
            RosterColumn::Ignored => "ignore",
        }
    }

    /// Reads a header as exports commonly write it: any case, spaces,
    /// hyphens or dots for underscores ("Date of Birth", "DOB", "Zip-Code").
    pub fn from_header(header: &str) -> Option<RosterColumn> {
        let key = header_key(header);
        let column = match key.as_str() {
            "mrn" | "medical_record_number" | "chart_number" | "patient_id" => RosterColumn::Mrn,
            "first_name" | "firstname" | "first" | "given_name" => {
                RosterColumn::Field(Field::FirstName)
            }
            "last_name" | "lastname" | "last" | "family_name" | "surname" => {
                RosterColumn::Field(Field::LastName)
            }
            "date_of_birth" | "dob" | "birth_date" | "birthdate" => {
                RosterColumn::Field(Field::DateOfBirth)
            }
            // Not "gender": an export's gender column may be gender
            // identity, and R1 needs the sex at birth. `--map` says so.
            "birth_sex" | "sex" | "sex_at_birth" => RosterColumn::Field(Field::BirthSex),
            "zip" | "zip_code" | "zipcode" | "postal_code" => RosterColumn::Field(Field::Zip),
            "email" | "email_address" | "e_mail" => RosterColumn::Field(Field::Email),
            "cell_phone" | "cell" | "mobile" | "mobile_phone" | "cell_phone_number" => {
                RosterColumn::Field(Field::CellPhone)
            }
            "preferred_language" | "language" => RosterColumn::PreferredLanguage,
            "ignore" => RosterColumn::Ignored,
            _ => return None,
        };
        Some(column)
    }
}

/// The comparable form of a header: trimmed, lower case, runs of spaces,
/// hyphens and dots as one underscore.
fn header_key(header: &str) -> String {
    let mut key = String::with_capacity(header.len());
    for c in header.trim().trim_start_matches('\u{feff}').chars() {
        if c == ' ' || c == '-' || c == '.' || c == '_' {
            if !key.ends_with('_') {
                key.push('_');
            }
        } else {
            key.extend(c.to_lowercase());
        }
    }
    key.trim_matches('_').to_string()
}

/// Why a header cannot be read; every problem is listed at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderProblems {
    /// Headers that name no column we know, as the file wrote them.
    pub unknown: Vec<String>,
    /// Required columns the file does not have.
    pub missing: Vec<RosterColumn>,
    /// Columns named twice (two headers mapping to the same column).
    pub repeated: Vec<RosterColumn>,
    /// `--map` entries that name no header of the file.
    pub unused_mappings: Vec<String>,
}

impl fmt::Display for HeaderProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = |columns: &[RosterColumn]| {
            columns
                .iter()
                .map(|c| c.key())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut lines = Vec::new();
        if !self.unknown.is_empty() {
            let quoted: Vec<String> = self.unknown.iter().map(|h| format!("{h:?}")).collect();
            lines.push(format!(
                "the header names columns Enroll does not know: {}; name what each holds \
                 with --map \"HEADER=COLUMN\" (COLUMN one of {}), or --map \"HEADER=ignore\"",
                quoted.join(", "),
                known_columns()
            ));
        }
        if !self.missing.is_empty() {
            lines.push(format!(
                "the file has no column for: {}; if the file names one differently, \
                 say which with --map \"HEADER=COLUMN\"",
                keys(&self.missing)
            ));
        }
        if !self.repeated.is_empty() {
            lines.push(format!(
                "more than one header names: {}",
                keys(&self.repeated)
            ));
        }
        if !self.unused_mappings.is_empty() {
            lines.push(format!(
                "--map names headers the file does not have: {}",
                self.unused_mappings.join(", ")
            ));
        }
        write!(f, "{}", lines.join("\n"))
    }
}

impl std::error::Error for HeaderProblems {}

/// The column names `--map` takes.
pub fn known_columns() -> String {
    let mut keys = vec!["mrn"];
    keys.extend(crate::fields::Field::ALL.iter().map(|f| f.key()));
    keys.extend(["preferred_language", "ignore"]);
    keys.join(", ")
}

/// A `--map` entry that is not `HEADER=COLUMN` with a known column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--map {0:?}: {1}")]
pub struct BadMapping(pub String, pub String);

/// The operator's renaming of a file's headers: `HEADER=COLUMN` entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderMap(BTreeMap<String, RosterColumn>);

impl HeaderMap {
    /// Reads `HEADER=COLUMN` entries (a header compared as [`RosterColumn::from_header`]
    /// compares them, so "Patient Number" matches "patient number").
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<HeaderMap, BadMapping> {
        let mut map = BTreeMap::new();
        for entry in entries {
            let Some((header, column)) = entry.rsplit_once('=') else {
                return Err(BadMapping(
                    entry.to_string(),
                    "write it as HEADER=COLUMN, for example \"Patient Number=mrn\"".into(),
                ));
            };
            let Some(column) = RosterColumn::from_header(column) else {
                return Err(BadMapping(
                    entry.to_string(),
                    format!("the column must be one of {}", known_columns()),
                ));
            };
            if header_key(header).is_empty() {
                return Err(BadMapping(entry.to_string(), "the header is empty".into()));
            }
            map.insert(header_key(header), column);
        }
        Ok(HeaderMap(map))
    }
}

/// Which column each position of a row holds, read from the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterColumns {
    columns: Vec<RosterColumn>,
}

impl RosterColumns {
    /// Reads the header: each name through `map` first, then the names we
    /// know. Unknown, missing and repeated columns are all reported at once.
    pub fn from_headers<'a>(
        headers: impl IntoIterator<Item = &'a str>,
        map: &HeaderMap,
    ) -> Result<RosterColumns, HeaderProblems> {
        let mut problems = HeaderProblems {
            unknown: vec![],
            missing: vec![],
            repeated: vec![],
            unused_mappings: vec![],
        };
        let mut used = Vec::new();
        let mut columns = Vec::new();
        for header in headers {
            let key = header_key(header);
            let column = match map.0.get(&key) {
                Some(column) => {
                    used.push(key);
                    Some(*column)
                }
                None => RosterColumn::from_header(header),
            };
            match column {
                Some(column) => {
                    if column != RosterColumn::Ignored
                        && columns.contains(&column)
                        && !problems.repeated.contains(&column)
                    {
                        problems.repeated.push(column);
                    }
                    columns.push(column);
                }
                None => {
                    problems.unknown.push(header.trim().to_string());
                    columns.push(RosterColumn::Ignored);
                }
            }
        }
        problems.missing = RosterColumn::REQUIRED
            .into_iter()
            .filter(|c| !columns.contains(c))
            .collect();
        problems.unused_mappings = map
            .0
            .keys()
            .filter(|k| !used.contains(k))
            .cloned()
            .collect();
        let fine = problems.unknown.is_empty()
            && problems.missing.is_empty()
            && problems.repeated.is_empty()
            && problems.unused_mappings.is_empty();
        if fine {
            Ok(RosterColumns { columns })
        } else {
            Err(problems)
        }
    }

    /// How many fields a row has.
    pub fn len(&self) -> usize {
        self.columns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// One row's cells as the patient they describe, or why the row
    /// cannot be loaded (the first problem found, in column order).
    pub fn patient<'a>(
        &self,
        cells: impl IntoIterator<Item = &'a str>,
    ) -> Result<PatientChange, RowProblem> {
        let mut change = PatientChange::default();
        let mut count = 0;
        for (column, cell) in self.columns.iter().zip(cells) {
            count += 1;
            let value = cell.trim();
            if value.is_empty() {
                continue;
            }
            match column {
                RosterColumn::Mrn => change.mrn = value.to_string(),
                RosterColumn::Field(field) => {
                    let canonical = canonical_value(*field, value)
                        .map_err(|problem| RowProblem::Field(*field, problem))?;
                    change.sent.set(*field, Some(canonical));
                }
                RosterColumn::PreferredLanguage => {
                    change.preferred_language = Some(value.to_string());
                }
                RosterColumn::Ignored => {}
            }
        }
        if count != self.columns.len() {
            return Err(RowProblem::FieldCount {
                expected: self.columns.len(),
                found: count,
            });
        }
        if change.mrn.is_empty() {
            return Err(RowProblem::NoMrn);
        }
        Ok(change)
    }
}

/// A value as the store keeps it, or why the field cannot hold it. A
/// date of birth is read in the common forms ([`parse_roster_date`]).
fn canonical_value(field: Field, value: &str) -> Result<String, Problem> {
    if field != Field::DateOfBirth {
        return field.canonical(value);
    }
    parse_roster_date(value)
        .map(|d| d.to_string())
        .ok_or_else(|| {
            Problem::invalid(
                "is not a date in a form Enroll reads (1990-07-04, 07/04/1990, \
                 7/4/1990, 19900704)",
            )
        })
}

/// The date forms rosters are exported in: ISO `1990-07-04`, US order
/// `07/04/1990`, `7/4/1990`, `07-04-1990`, `07.04.1990`, and `19900704`
/// (HL7's DTM). Two-digit years are refused: 04/07/23 could be 1923 or 2023.
pub fn parse_roster_date(value: &str) -> Option<Date> {
    let value = value.trim();
    if value.len() == 8 && value.bytes().all(|b| b.is_ascii_digit()) {
        let year = value.get(0..4)?.parse().ok()?;
        let month = value.get(4..6)?.parse().ok()?;
        let day = value.get(6..8)?.parse().ok()?;
        return Date::new(year, month, day).ok();
    }
    parse_date(value)
}

/// Why a row was not loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowProblem {
    NoMrn,
    Field(Field, Problem),
    FieldCount {
        expected: usize,
        found: usize,
    },
    /// The CSV reader could not read the row (not UTF-8, a broken quote).
    Unreadable(String),
}

impl fmt::Display for RowProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RowProblem::NoMrn => write!(f, "the mrn is blank"),
            RowProblem::Field(field, Problem::Invalid(words)) => {
                write!(f, "{} {words}", field.label())
            }
            RowProblem::Field(field, Problem::Missing) => write!(f, "{} is missing", field.label()),
            RowProblem::FieldCount { expected, found } => write!(
                f,
                "the row has {found} fields where the header has {expected}"
            ),
            RowProblem::Unreadable(words) => write!(f, "{words}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(headers: &[&str]) -> RosterColumns {
        RosterColumns::from_headers(headers.iter().copied(), &HeaderMap::default())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    const STANDARD: [&str; 8] = [
        "mrn",
        "first_name",
        "last_name",
        "date_of_birth",
        "birth_sex",
        "zip",
        "email",
        "cell_phone",
    ];

    #[test]
    fn headers_are_read_as_exports_write_them() {
        let read = |h: &str| RosterColumn::from_header(h);
        assert_eq!(read("MRN"), Some(RosterColumn::Mrn));
        assert_eq!(read("\u{feff}mrn"), Some(RosterColumn::Mrn));
        assert_eq!(
            read(" Date of Birth "),
            Some(RosterColumn::Field(Field::DateOfBirth))
        );
        assert_eq!(read("DOB"), Some(RosterColumn::Field(Field::DateOfBirth)));
        assert_eq!(read("Zip-Code"), Some(RosterColumn::Field(Field::Zip)));
        assert_eq!(read("E-mail"), Some(RosterColumn::Field(Field::Email)));
        assert_eq!(
            read("Mobile Phone"),
            Some(RosterColumn::Field(Field::CellPhone))
        );
        assert_eq!(read("Language"), Some(RosterColumn::PreferredLanguage));
        assert_eq!(read("Gender"), None, "gender is not birth sex");
        assert_eq!(read("Home Phone"), None);
    }

    #[test]
    fn every_problem_of_a_header_is_reported_at_once() {
        let problems = RosterColumns::from_headers(
            [
                "MRN",
                "First",
                "Last",
                "Gender",
                "DOB",
                "Notes",
                "first name",
            ],
            &HeaderMap::default(),
        )
        .err()
        .unwrap_or_else(|| panic!("accepted"));
        assert_eq!(problems.unknown, ["Gender", "Notes"]);
        assert_eq!(
            problems.missing,
            [
                RosterColumn::Field(Field::BirthSex),
                RosterColumn::Field(Field::Zip),
                RosterColumn::Field(Field::Email)
            ]
        );
        assert_eq!(problems.repeated, [RosterColumn::Field(Field::FirstName)]);
        let words = problems.to_string();
        assert!(words.contains("\"Gender\", \"Notes\""), "{words}");
        assert!(words.contains("--map \"HEADER=ignore\""), "{words}");
        assert!(
            words.contains("no column for: birth_sex, zip, email"),
            "{words}"
        );
        assert!(
            words.contains("more than one header names: first_name"),
            "{words}"
        );
    }

    #[test]
    fn a_map_names_what_the_file_calls_differently() {
        let map = HeaderMap::parse(["Patient Number=mrn", "Gender=birth_sex", "Notes=ignore"])
            .unwrap_or_else(|e| panic!("{e}"));
        let headers = [
            "Patient Number",
            "first",
            "last",
            "dob",
            "gender",
            "zip",
            "email",
            "notes",
        ];
        let columns = RosterColumns::from_headers(headers, &map).unwrap_or_else(|e| panic!("{e}"));
        let row = columns
            .patient([
                "A-1",
                "Ida",
                "Wells",
                "1990-07-04",
                "f",
                "60616",
                "ida@example.org",
                "x",
            ])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(row.mrn, "A-1");
        assert_eq!(row.sent.birth_sex.as_deref(), Some("F"));

        let unused = HeaderMap::parse(["Chart=mrn"]).unwrap_or_else(|e| panic!("{e}"));
        let problems = RosterColumns::from_headers(STANDARD, &unused)
            .err()
            .unwrap_or_else(|| panic!("accepted"));
        assert_eq!(problems.unused_mappings, ["chart"]);
    }

    #[test]
    fn a_bad_map_entry_says_how_to_write_it() {
        let no_equals = HeaderMap::parse(["Patient Number"]).err();
        assert!(no_equals.is_some_and(|e| e.to_string().contains("HEADER=COLUMN")));
        let unknown = HeaderMap::parse(["Gender=gender"]).err();
        assert!(unknown.is_some_and(|e| e.to_string().contains("birth_sex")));
        let empty = HeaderMap::parse(["=mrn"]).err();
        assert!(empty.is_some_and(|e| e.to_string().contains("header is empty")));
    }

    #[test]
    fn a_row_gives_what_it_has_and_a_blank_cell_says_nothing() {
        let row = columns(&STANDARD)
            .patient([
                " 000123 ",
                "ida",
                "Wells",
                "7/4/1990",
                "Female",
                "60616-1234",
                "Ida@Example.org",
                "",
            ])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(row.mrn, "000123");
        assert_eq!(row.sent.first_name.as_deref(), Some("ida"));
        assert_eq!(row.sent.date_of_birth.as_deref(), Some("1990-07-04"));
        assert_eq!(row.sent.birth_sex.as_deref(), Some("F"));
        assert_eq!(row.sent.cell_phone, None);
        assert!(row.cleared.is_empty(), "a blank cell clears nothing");
        assert_eq!(row.preferred_language, None);
    }

    #[test]
    fn a_bad_row_is_refused_with_its_reason_and_without_its_value() {
        let standard = columns(&STANDARD);
        let refuse = |cells: [&str; 8]| {
            standard
                .patient(cells)
                .err()
                .unwrap_or_else(|| panic!("accepted {cells:?}"))
        };
        let ok = [
            "1",
            "Ida",
            "Wells",
            "1990-07-04",
            "F",
            "60616",
            "ida@example.org",
            "",
        ];
        let with = |i: usize, value: &'static str| {
            let mut cells = ok;
            cells[i] = value;
            cells
        };
        assert_eq!(refuse(with(0, "  ")), RowProblem::NoMrn);
        let date = refuse(with(3, "04/07/23"));
        assert!(matches!(date, RowProblem::Field(Field::DateOfBirth, _)));
        assert!(date.to_string().starts_with("date of birth is not a date"));
        assert!(!date.to_string().contains("04/07/23"));
        assert!(matches!(
            refuse(with(4, "X")),
            RowProblem::Field(Field::BirthSex, _)
        ));
        let email = refuse(with(6, "ida.example.org")).to_string();
        assert!(email.starts_with("email address"), "{email}");
        assert!(!email.contains("ida.example.org"), "{email}");
        assert!(matches!(
            refuse(with(7, "12")),
            RowProblem::Field(Field::CellPhone, _)
        ));
        let short = standard.patient(["1", "Ida"]).err();
        assert_eq!(
            short,
            Some(RowProblem::FieldCount {
                expected: 8,
                found: 2
            })
        );
        assert_eq!(
            short.map(|p| p.to_string()).unwrap_or_default(),
            "the row has 2 fields where the header has 8"
        );
    }

    #[test]
    fn dates_are_read_in_the_common_forms_and_never_guessed() {
        let july_4 = Date::new(1990, 7, 4).ok();
        for form in [
            "1990-07-04",
            "07/04/1990",
            "7/4/1990",
            "07-04-1990",
            "07.04.1990",
            "19900704",
        ] {
            assert_eq!(parse_roster_date(form), july_4, "{form}");
        }
        for refused in [
            "04/07/90",
            "1990-02-30",
            "19900230",
            "July 4 1990",
            "",
            "1990704",
        ] {
            assert_eq!(parse_roster_date(refused), None, "{refused}");
        }
    }
}
