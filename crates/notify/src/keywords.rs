//! SMS reply keywords (R13): STOP and its synonyms opt a number out at once,
//! START opts it back in.

/// What an inbound text asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SmsKeyword {
    OptOut,
    OptIn,
}

const OPT_OUT: &[&str] = &[
    "STOP",
    "STOPALL",
    "QUIT",
    "END",
    "REVOKE",
    "OPT OUT",
    "OPTOUT",
    "CANCEL",
    "UNSUBSCRIBE",
];

const OPT_IN: &[&str] = &["START", "UNSTOP"];

/// Classifies an inbound SMS body. The whole message must be the keyword:
/// case is ignored, surrounding spaces and punctuation ("stop.", "Stop!",
/// "\"STOP\"") are dropped, and inner spaces, hyphens or underscores between words
/// count as one space ("opt-out", "OPT  OUT"). "Please stop texting me" is not a
/// keyword (staff see it in the inbox instead).
pub fn is_opt_out_keyword(body: &str) -> Option<SmsKeyword> {
    let trimmed = body.trim_matches(|c: char| !c.is_alphanumeric());
    let normalised = trimmed
        .split(|c: char| c.is_whitespace() || c == '-' || c == '_')
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
        .to_uppercase();
    if OPT_OUT.contains(&normalised.as_str()) {
        Some(SmsKeyword::OptOut)
    } else if OPT_IN.contains(&normalised.as_str()) {
        Some(SmsKeyword::OptIn)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyword_table() {
        let table: &[(&str, Option<SmsKeyword>)] = &[
            ("STOP", Some(SmsKeyword::OptOut)),
            ("stop", Some(SmsKeyword::OptOut)),
            ("  Stop  ", Some(SmsKeyword::OptOut)),
            ("stop.", Some(SmsKeyword::OptOut)),
            ("Stop!", Some(SmsKeyword::OptOut)),
            ("\"STOP\"", Some(SmsKeyword::OptOut)),
            ("STOP\n", Some(SmsKeyword::OptOut)),
            ("stopall", Some(SmsKeyword::OptOut)),
            ("QUIT", Some(SmsKeyword::OptOut)),
            ("quit", Some(SmsKeyword::OptOut)),
            ("End", Some(SmsKeyword::OptOut)),
            ("REVOKE", Some(SmsKeyword::OptOut)),
            ("OPT OUT", Some(SmsKeyword::OptOut)),
            ("opt out", Some(SmsKeyword::OptOut)),
            ("Opt-Out", Some(SmsKeyword::OptOut)),
            ("opt   out!", Some(SmsKeyword::OptOut)),
            ("optout", Some(SmsKeyword::OptOut)),
            ("CANCEL", Some(SmsKeyword::OptOut)),
            ("cancel.", Some(SmsKeyword::OptOut)),
            ("UNSUBSCRIBE", Some(SmsKeyword::OptOut)),
            ("Unsubscribe", Some(SmsKeyword::OptOut)),
            ("START", Some(SmsKeyword::OptIn)),
            ("start", Some(SmsKeyword::OptIn)),
            (" Start. ", Some(SmsKeyword::OptIn)),
            ("UNSTOP", Some(SmsKeyword::OptIn)),
            ("unstop!", Some(SmsKeyword::OptIn)),
            ("", None),
            ("   ", None),
            ("?!", None),
            ("Hello", None),
            ("YES", None),
            ("stopp", None),
            ("STOP IT", None),
            ("please stop texting me", None),
            ("don't stop", None),
            ("OPT", None),
            ("OUT", None),
            ("START OVER", None),
            ("s t o p", None),
        ];
        for (body, expected) in table {
            assert_eq!(is_opt_out_keyword(body), *expected, "body {body:?}");
        }
    }
}
