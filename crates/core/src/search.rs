//! What a front desk types into the one search box, understood (the staff
//! UI's patient search): a name in the ways people type it ("smi jo",
//! "Smith, John", "john smith"), a date of birth (1990-07-04, 07/04/1990,
//! 7/4/1990), an MRN, a phone number in any common format, or an email.
//!
//! Pure: the store turns [`SearchTerms`] into SQL.

use jiff::civil::Date;

use crate::E164Phone;

/// A name typed into the search box, as lowercase prefixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameTerms {
    /// One word: a first or a last name starting with it.
    Either(String),
    /// "Smith, John": the last name first, because of the comma.
    LastFirst { last: String, first: String },
    /// "john smith" or "smith john": either order.
    TwoWords(String, String),
}

/// One way a typed name can match a patient: the last name starts with
/// `last` and the first name with `first` (a `None` side is not looked at).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameMatch<'a> {
    pub last: Option<&'a str>,
    pub first: Option<&'a str>,
}

impl NameTerms {
    /// The ways this name can match, any one of them enough: one word is a
    /// last or a first name; "Smith, John" is one way; two words are either
    /// order. The store searches each way on its own index, in name order,
    /// so a short prefix stops at the first page of results.
    pub fn ways(&self) -> Vec<NameMatch<'_>> {
        match self {
            NameTerms::Either(word) => vec![
                NameMatch {
                    last: Some(word),
                    first: None,
                },
                NameMatch {
                    last: None,
                    first: Some(word),
                },
            ],
            NameTerms::LastFirst { last, first } => vec![NameMatch {
                last: Some(last),
                first: Some(first),
            }],
            NameTerms::TwoWords(a, b) => vec![
                NameMatch {
                    last: Some(a),
                    first: Some(b),
                },
                NameMatch {
                    last: Some(b),
                    first: Some(a),
                },
            ],
        }
    }
}

/// Everything the box held that means something. Every part present must
/// match (a name and a date of birth narrow each other down).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchTerms {
    pub name: Option<NameTerms>,
    pub dob: Option<Date>,
    /// An MRN, exact (any practice's MRN format: letters and digits).
    pub mrn: Option<String>,
    /// A phone number, as stored (E.164). A run of digits may be an MRN or
    /// a phone number, so both are tried.
    pub phone: Option<String>,
    /// Lowercase, exact.
    pub email: Option<String>,
}

impl SearchTerms {
    pub fn is_empty(&self) -> bool {
        self == &SearchTerms::default()
    }

    /// Understands the box. Words that mean nothing (punctuation alone) are
    /// ignored; more than two name words keep the first and the last.
    pub fn parse(raw: &str) -> SearchTerms {
        let text = raw.trim();
        if text.contains('@') {
            return SearchTerms {
                email: Some(text.to_lowercase()),
                ..SearchTerms::default()
            };
        }
        if let Some(phone) = whole_phone(text) {
            return SearchTerms {
                mrn: digits_only(text).filter(|_| !text.contains(' ')),
                phone: Some(phone),
                ..SearchTerms::default()
            };
        }
        let mut terms = SearchTerms::default();
        let (before_comma, after_comma) = match text.split_once(',') {
            Some((last, first)) => (last, Some(first)),
            None => (text, None),
        };
        let mut words = Vec::new();
        for word in before_comma.split_whitespace() {
            terms.take_word(word, &mut words);
        }
        let mut first_words = Vec::new();
        for word in after_comma.unwrap_or("").split_whitespace() {
            terms.take_word(word, &mut first_words);
        }
        terms.name = match (after_comma, words.as_slice(), first_words.as_slice()) {
            (Some(_), [.., last], [first, ..]) => Some(NameTerms::LastFirst {
                last: last.clone(),
                first: first.clone(),
            }),
            (_, [one], []) | (_, [], [one]) => Some(NameTerms::Either(one.clone())),
            (_, [a, .., b], _) => Some(NameTerms::TwoWords(a.clone(), b.clone())),
            _ => None,
        };
        terms
    }

    /// A date, an MRN (a word with a digit) or a name word.
    fn take_word(&mut self, word: &str, names: &mut Vec<String>) {
        if let Some(date) = parse_date(word) {
            self.dob = Some(date);
        } else if word.chars().any(|c| c.is_ascii_digit()) {
            self.mrn = Some(word.to_string());
        } else {
            let name: String = word
                .chars()
                .filter(|c| c.is_alphabetic() || *c == '\'' || *c == '-')
                .flat_map(char::to_lowercase)
                .collect();
            if !name.is_empty() {
                names.push(name);
            }
        }
    }
}

/// 1990-07-04, 07/04/1990, 7/4/1990 (US order), 07-04-1990.
pub fn parse_date(word: &str) -> Option<Date> {
    if let Ok(date) = word.parse::<Date>() {
        return Some(date);
    }
    let parts: Vec<&str> = word.split(['/', '-', '.']).collect();
    let [month, day, year] = parts.as_slice() else {
        return None;
    };
    if year.len() != 4 {
        return None;
    }
    Date::new(year.parse().ok()?, month.parse().ok()?, day.parse().ok()?).ok()
}

/// The whole box as a phone number: 10 to 15 digits with only phone
/// punctuation around them.
fn whole_phone(text: &str) -> Option<String> {
    let only_phone_chars = text
        .chars()
        .all(|c| c.is_ascii_digit() || " ()-.+".contains(c));
    let digits = text.chars().filter(char::is_ascii_digit).count();
    if !only_phone_chars || !(10..=15).contains(&digits) || parse_date(text).is_some() {
        return None;
    }
    E164Phone::parse(text).ok().map(|p| p.as_str().to_string())
}

fn digits_only(text: &str) -> Option<String> {
    text.chars()
        .all(|c| c.is_ascii_digit())
        .then(|| text.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_name_matches_in_each_way_people_mean_it() {
        use super::{NameMatch, NameTerms};
        let way = |last, first| NameMatch { last, first };
        assert_eq!(
            NameTerms::Either("smi".into()).ways(),
            [way(Some("smi"), None), way(None, Some("smi"))]
        );
        assert_eq!(
            NameTerms::LastFirst {
                last: "smith".into(),
                first: "jo".into()
            }
            .ways(),
            [way(Some("smith"), Some("jo"))]
        );
        assert_eq!(
            NameTerms::TwoWords("john".into(), "smith".into()).ways(),
            [
                way(Some("john"), Some("smith")),
                way(Some("smith"), Some("john"))
            ]
        );
    }

    use super::*;

    fn name(terms: &SearchTerms) -> Option<NameTerms> {
        terms.name.clone()
    }

    fn s(v: &str) -> String {
        v.to_string()
    }

    #[test]
    fn names_are_understood_the_ways_people_type_them() {
        let cases = [
            ("smi", Some(NameTerms::Either(s("smi")))),
            ("  Smith ", Some(NameTerms::Either(s("smith")))),
            ("smi jo", Some(NameTerms::TwoWords(s("smi"), s("jo")))),
            (
                "Smith, John",
                Some(NameTerms::LastFirst {
                    last: s("smith"),
                    first: s("john"),
                }),
            ),
            (
                "smith,jo",
                Some(NameTerms::LastFirst {
                    last: s("smith"),
                    first: s("jo"),
                }),
            ),
            (
                "john smith",
                Some(NameTerms::TwoWords(s("john"), s("smith"))),
            ),
            (
                "Mary Ann O'Neil",
                Some(NameTerms::TwoWords(s("mary"), s("o'neil"))),
            ),
            ("Smith,", Some(NameTerms::Either(s("smith")))),
            // Hyphens and apostrophes belong to names; other punctuation is dropped.
            ("Lopez-Diaz", Some(NameTerms::Either(s("lopez-diaz")))),
            ("smith. jo!", Some(NameTerms::TwoWords(s("smith"), s("jo")))),
            ("José", Some(NameTerms::Either(s("josé")))),
            ("", None),
            (" , ", None),
        ];
        for (typed, expected) in cases {
            assert_eq!(name(&SearchTerms::parse(typed)), expected, "{typed:?}");
        }
    }

    #[test]
    fn dates_of_birth_in_three_formats() {
        let july_4 = Date::new(1990, 7, 4).ok();
        for typed in ["1990-07-04", "07/04/1990", "7/4/1990", "07-04-1990"] {
            let terms = SearchTerms::parse(typed);
            assert_eq!(terms.dob, july_4, "{typed}");
            assert_eq!(terms.name, None, "{typed}");
            assert_eq!(terms.phone, None, "{typed}");
        }
        assert_eq!(SearchTerms::parse("13/45/1990").dob, None);
        assert_eq!(
            SearchTerms::parse("7/4/90").dob,
            None,
            "two-digit years are ambiguous"
        );
    }

    #[test]
    fn a_name_and_a_date_narrow_each_other() {
        let terms = SearchTerms::parse("smith 7/4/1990");
        assert_eq!(terms.name, Some(NameTerms::Either(s("smith"))));
        assert_eq!(terms.dob, Date::new(1990, 7, 4).ok());
    }

    #[test]
    fn phone_numbers_in_common_formats_become_e164() {
        for typed in [
            "(617) 555-0100",
            "617-555-0100",
            "617.555.0100",
            "+1 617 555 0100",
            "6175550100",
        ] {
            let terms = SearchTerms::parse(typed);
            assert_eq!(terms.phone.as_deref(), Some("+16175550100"), "{typed}");
            assert_eq!(terms.name, None, "{typed}");
        }
        // A bare run of digits may as well be an MRN.
        assert_eq!(
            SearchTerms::parse("6175550100").mrn.as_deref(),
            Some("6175550100")
        );
        assert_eq!(SearchTerms::parse("617-555-0100").mrn, None);
        // Only the whole box is a phone number, and only with 10 to 15
        // digits (a word before it, or a shorter number, is not one).
        let worded = SearchTerms::parse("tel 617-555-0100");
        assert_eq!(worded.phone, None);
        assert_eq!(worded.name, Some(NameTerms::Either(s("tel"))));
        assert_eq!(SearchTerms::parse("+376 312345").phone, None);
    }

    #[test]
    fn mrns_and_emails() {
        assert_eq!(
            SearchTerms::parse("MRN00042").mrn.as_deref(),
            Some("MRN00042")
        );
        assert_eq!(SearchTerms::parse("00042").mrn.as_deref(), Some("00042"));
        assert_eq!(SearchTerms::parse("00042").phone, None);
        let email = SearchTerms::parse(" Ana.Lopez@Example.com ");
        assert_eq!(email.email.as_deref(), Some("ana.lopez@example.com"));
        assert_eq!(email.name, None);
        assert!(SearchTerms::parse("  ").is_empty());
        assert!(!SearchTerms::parse("smith").is_empty());
        assert!(!SearchTerms::parse("00042").is_empty());
    }
}
