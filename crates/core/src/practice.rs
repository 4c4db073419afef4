//! A practice's code: the stable name HL7 senders use (MSH-4) and the
//! one per-practice template overrides are filed under, so it must be a
//! plain token.

use serde::Serialize;

/// The longest code accepted.
pub const PRACTICE_CODE_MAX_LEN: usize = 64;

/// A code that passed [`PracticeCode::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct PracticeCode(String);

/// Why a code was refused; the message says what a code may contain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid practice code {0:?}: {RULE}")]
pub struct InvalidPracticeCode(pub String);

/// What a valid code looks like, in words for the people who type one.
const RULE: &str = "use 1 to 64 letters, digits, '-' or '_'";

impl InvalidPracticeCode {
    /// What a code may contain, without repeating the code.
    pub fn rule(&self) -> &'static str {
        RULE
    }
}

impl PracticeCode {
    /// 1 to 64 ASCII letters, digits, `-` or `_`; nothing else, not even
    /// surrounding blanks, since the code is matched exactly.
    pub fn parse(raw: &str) -> Result<PracticeCode, InvalidPracticeCode> {
        let valid = !raw.is_empty()
            && raw.len() <= PRACTICE_CODE_MAX_LEN
            && raw
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if valid {
            Ok(PracticeCode(raw.to_string()))
        } else {
            Err(InvalidPracticeCode(raw.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn practice_codes() {
        let longest = "x".repeat(64);
        let too_long = "x".repeat(65);
        #[rustfmt::skip]
        let rows: &[(&str, &str, bool)] = &[
            ("letters", "NORTH", true),
            ("letters, digits, - and _", "north-1_B", true),
            ("one character", "A", true),
            ("64 characters", &longest, true),
            ("empty", "", false),
            ("65 characters", &too_long, false),
            ("a space", "has space", false),
            ("surrounding blanks", " NORTH ", false),
            ("a slash (template paths)", "a/b", false),
            ("an HL7 component", "NORTH^1.2.3^ISO", false),
            ("non-ASCII letter", "NÖRD", false),
        ];
        for &(name, raw, valid) in rows {
            let parsed = PracticeCode::parse(raw);
            assert_eq!(parsed.is_ok(), valid, "{name}: {raw:?}");
            if let Ok(code) = parsed {
                assert_eq!(code.as_str(), raw);
            }
        }
        assert_eq!(
            PracticeCode::parse("a b").map_err(|e| e.to_string()),
            Err("invalid practice code \"a b\": use 1 to 64 letters, digits, '-' or '_'".into())
        );
        // The rule alone, for a form's field, does not repeat the code.
        assert_eq!(
            PracticeCode::parse("a b").map_err(|e| e.rule()),
            Err("use 1 to 64 letters, digits, '-' or '_'")
        );
    }
}
