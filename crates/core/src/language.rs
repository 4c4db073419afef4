//! The languages Enroll speaks to patients in (invites now, the activation
//! pages next). One mapping each way: [`Language::code`] and
//! [`Language::from_code`] for our own keys (API parameters, template
//! names), [`Language::from_preference`] for what an EHR records.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    #[default]
    #[serde(rename = "en")]
    English,
    #[serde(rename = "es")]
    Spanish,
}

impl Language {
    pub const ALL: [Language; 2] = [Language::English, Language::Spanish];

    /// The ISO 639-1 code: "en" or "es".
    pub fn code(self) -> &'static str {
        match self {
            Language::English => "en",
            Language::Spanish => "es",
        }
    }

    /// The inverse of [`Language::code`]; `None` for any other text.
    pub fn from_code(code: &str) -> Option<Language> {
        Language::ALL.into_iter().find(|l| l.code() == code)
    }

    /// Maps a chart's language preference to a language we speak: "es",
    /// "spa", "Spanish", "Español", "es-MX", "es_US" (any case, trimmed)
    /// give Spanish; anything else, or nothing, gives English.
    pub fn from_preference(preference: Option<&str>) -> Language {
        let Some(raw) = preference else {
            return Language::English;
        };
        let value = raw.trim().to_lowercase();
        let spanish = matches!(
            value.as_str(),
            "es" | "spa" | "spanish" | "español" | "espanol" | "castellano"
        ) || value.starts_with("es-")
            || value.starts_with("es_");
        if spanish {
            Language::Spanish
        } else {
            Language::English
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_from_preference() {
        for spanish in [
            "es", "spa", "Spanish", "SPANISH", " es-MX ", "es_US", "Español", "espanol",
        ] {
            assert_eq!(
                Language::from_preference(Some(spanish)),
                Language::Spanish,
                "{spanish}"
            );
        }
        for english in [
            "en",
            "eng",
            "English",
            "",
            "est",
            "esperanto",
            "fr",
            "en-US",
        ] {
            assert_eq!(
                Language::from_preference(Some(english)),
                Language::English,
                "{english}"
            );
        }
        assert_eq!(Language::from_preference(None), Language::English);
    }

    #[test]
    fn codes_read_back() {
        for language in Language::ALL {
            assert_eq!(Language::from_code(language.code()), Some(language));
            let json = serde_json::to_string(&language).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", language.code()));
        }
        assert_eq!(Language::Spanish.code(), "es");
        assert_eq!(Language::from_code("ES"), None, "codes are exact");
        assert_eq!(Language::from_code("fr"), None);
    }
}
