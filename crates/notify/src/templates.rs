//! Invite texts: built-in English and Spanish email (subject, text, HTML) and
//! SMS, plus per-practice overrides that admins edit at run time.
//!
//! Templates see exactly four variables: `first_name`, `practice_name`,
//! `activation_url`, `unsubscribe_url` (R12). Undefined variables are errors,
//! so an override that tries `{{ last_name }}` or `{{ dob }}` is rejected when
//! it is added, not silently rendered empty. HTML templates are auto-escaped.

use std::collections::HashSet;
use std::fmt;

use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, UndefinedBehavior};

use crate::{InviteContext, Language, RenderedEmail};

/// R13: an invite text is one SMS of at most 160 characters.
pub const SMS_MAX_CHARS: usize = 160;

/// One editable part of an invite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TemplateKind {
    EmailSubject,
    EmailText,
    EmailHtml,
    Sms,
}

impl TemplateKind {
    /// The file name part of the template's name; the extension decides
    /// auto-escaping (`.html` escapes, `.txt` does not).
    fn file_name(self) -> &'static str {
        match self {
            TemplateKind::EmailSubject => "subject.txt",
            TemplateKind::EmailText => "text.txt",
            TemplateKind::EmailHtml => "body.html",
            TemplateKind::Sms => "sms.txt",
        }
    }
}

impl fmt::Display for TemplateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TemplateKind::EmailSubject => "email subject",
            TemplateKind::EmailText => "email text",
            TemplateKind::EmailHtml => "email HTML",
            TemplateKind::Sms => "SMS",
        })
    }
}

/// Why a template could not be added or rendered. Messages name the template
/// and the problem, never the patient's data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("invalid practice code {0:?}: use 1 to 64 letters, digits, '-' or '_'")]
    InvalidPracticeCode(String),
    #[error("the {language} {kind} template for practice {practice_code} is invalid: {reason}")]
    InvalidOverride {
        practice_code: String,
        language: &'static str,
        kind: TemplateKind,
        reason: String,
    },
    #[error("rendering template {template} failed: {reason}")]
    Render { template: String, reason: String },
    #[error("the rendered {0} is empty")]
    Empty(TemplateKind),
    #[error("the SMS is {len} characters long; the limit is {SMS_MAX_CHARS} (R13)")]
    SmsTooLong { len: usize },
    #[error("the SMS does not name the practice (R13)")]
    SmsMissingPractice,
    #[error("the SMS does not say how to opt out (it must contain the word STOP) (R13)")]
    SmsMissingOptOut,
}

/// The invite templates: the built-in ones and any practice overrides.
#[derive(Clone)]
pub struct Templates {
    env: Environment<'static>,
    overrides: HashSet<String>,
}

impl fmt::Debug for Templates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut overrides: Vec<&String> = self.overrides.iter().collect();
        overrides.sort();
        f.debug_struct("Templates")
            .field("overrides", &overrides)
            .finish_non_exhaustive()
    }
}

impl Default for Templates {
    fn default() -> Self {
        Templates::builtin()
    }
}

const BUILTIN: &[(Language, TemplateKind, &str)] = &[
    (
        Language::English,
        TemplateKind::EmailSubject,
        include_str!("../templates/en_subject.txt"),
    ),
    (
        Language::English,
        TemplateKind::EmailText,
        include_str!("../templates/en_text.txt"),
    ),
    (
        Language::English,
        TemplateKind::EmailHtml,
        include_str!("../templates/en_body.html"),
    ),
    (
        Language::English,
        TemplateKind::Sms,
        include_str!("../templates/en_sms.txt"),
    ),
    (
        Language::Spanish,
        TemplateKind::EmailSubject,
        include_str!("../templates/es_subject.txt"),
    ),
    (
        Language::Spanish,
        TemplateKind::EmailText,
        include_str!("../templates/es_text.txt"),
    ),
    (
        Language::Spanish,
        TemplateKind::EmailHtml,
        include_str!("../templates/es_body.html"),
    ),
    (
        Language::Spanish,
        TemplateKind::Sms,
        include_str!("../templates/es_sms.txt"),
    ),
];

fn builtin_name(language: Language, kind: TemplateKind) -> String {
    format!("builtin/{}/{}", language.code(), kind.file_name())
}

fn override_name(practice_code: &str, language: Language, kind: TemplateKind) -> String {
    format!(
        "practice/{practice_code}/{}/{}",
        language.code(),
        kind.file_name()
    )
}

/// Escapes for HTML text and quoted attributes. Unlike minijinja's default it
/// leaves `/` alone, so links read `https://...` in the HTML source rather than
/// `https:&#x2f;&#x2f;...`, which some mail filters dislike.
fn escape_html(input: &str, out: &mut String) {
    for c in input.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
}

fn new_environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_formatter(|out, state, value| {
        if matches!(state.auto_escape(), AutoEscape::Html)
            && !value.is_safe()
            && let Some(text) = value.as_str()
        {
            let mut escaped = String::with_capacity(text.len());
            escape_html(text, &mut escaped);
            out.write_str(&escaped).map_err(minijinja::Error::from)?;
            return Ok(());
        }
        minijinja::escape_formatter(out, state, value)
    });
    env
}

fn template_context(ctx: &InviteContext) -> Value {
    minijinja::context! {
        first_name => ctx.first_name.as_str(),
        practice_name => ctx.practice_name.as_str(),
        activation_url => ctx.activation_url.as_str(),
        unsubscribe_url => ctx.unsubscribe_url.as_str(),
    }
}

/// A realistic invite used to test-render overrides: a 25-character practice
/// name and a 60-character activation link.
fn sample_context(language: Language) -> InviteContext {
    InviteContext {
        first_name: "Alexandra".to_owned(),
        practice_name: "Riverside Family Medicine".to_owned(),
        activation_url: "https://portal.example.org/activate/Zq3vX9kLm2Pw7RtY8uBn4Hc1".to_owned(),
        unsubscribe_url: "https://portal.example.org/unsubscribe/42/9f86d081884c7d65".to_owned(),
        language,
    }
}

/// The R13 rules for a rendered text.
fn check_sms(text: &str, ctx: &InviteContext) -> Result<(), TemplateError> {
    if text.is_empty() {
        return Err(TemplateError::Empty(TemplateKind::Sms));
    }
    let len = text.chars().count();
    if len > SMS_MAX_CHARS {
        return Err(TemplateError::SmsTooLong { len });
    }
    let practice = ctx.practice_name.trim();
    if practice.is_empty() || !text.contains(practice) {
        return Err(TemplateError::SmsMissingPractice);
    }
    let names_stop = text
        .split(|c: char| !c.is_alphanumeric())
        .any(|word| word == "STOP");
    if !names_stop {
        return Err(TemplateError::SmsMissingOptOut);
    }
    Ok(())
}

impl Templates {
    /// The built-in English and Spanish templates.
    pub fn builtin() -> Templates {
        let mut env = new_environment();
        for (language, kind, source) in BUILTIN {
            // The built-in sources are compiled in and covered by tests; a
            // syntax error in one is a bug caught by `builtin_templates_compile`.
            if let Err(err) = env.add_template_owned(builtin_name(*language, *kind), *source) {
                tracing::error!(error = %err, "built-in invite template does not compile");
            }
        }
        Templates {
            env,
            overrides: HashSet::new(),
        }
    }

    /// Replaces one template for one practice and language. The source is
    /// compiled and test-rendered with a realistic sample invite: it may use
    /// only the four invite variables; an email part must not render empty;
    /// email text and HTML must contain the activation link and the
    /// unsubscribe link; an SMS must pass the R13 checks of
    /// [`Templates::render_sms`].
    pub fn with_override(
        mut self,
        practice_code: &str,
        language: Language,
        kind: TemplateKind,
        source: &str,
    ) -> Result<Templates, TemplateError> {
        self.add_override(practice_code, language, kind, source)?;
        Ok(self)
    }

    /// Like [`Templates::with_override`] but in place; on an error `self` is
    /// left as it was (handy when an admin saves a template in the running
    /// server).
    pub fn add_override(
        &mut self,
        practice_code: &str,
        language: Language,
        kind: TemplateKind,
        source: &str,
    ) -> Result<(), TemplateError> {
        // Overrides are filed under the code (see `override_name`), so
        // only a code a practice can have is accepted.
        if enroll_core::PracticeCode::parse(practice_code).is_err() {
            return Err(TemplateError::InvalidPracticeCode(practice_code.to_owned()));
        }
        let invalid = |reason: String| TemplateError::InvalidOverride {
            practice_code: practice_code.to_owned(),
            language: language.code(),
            kind,
            reason,
        };

        // Compile and render in a scratch environment first, so a rejected
        // override leaves `self` untouched.
        let name = override_name(practice_code, language, kind);
        let mut scratch = new_environment();
        scratch
            .add_template_owned(name.clone(), source.to_owned())
            .map_err(|err| invalid(err.to_string()))?;
        let sample = sample_context(language);
        let rendered = scratch
            .get_template(&name)
            .and_then(|template| template.render(template_context(&sample)))
            .map_err(|err| match err.kind() {
                // R12: the only way a template could reach other patient
                // data is a name we do not pass; say so in those words.
                minijinja::ErrorKind::UndefinedError => invalid(format!(
                    "it uses a name other than first_name, practice_name, activation_url and \
                     unsubscribe_url (line {}); no other detail of a patient may be in a message",
                    err.line().unwrap_or(1)
                )),
                _ => invalid(err.to_string()),
            })?;
        let rendered = normalise(kind, &rendered);
        if rendered.is_empty() {
            return Err(invalid("it renders to nothing".to_owned()));
        }
        match kind {
            TemplateKind::EmailSubject => {}
            TemplateKind::EmailText | TemplateKind::EmailHtml => {
                if !rendered.contains(&sample.activation_url) {
                    return Err(invalid(
                        "it must show the activation link {{ activation_url }}".to_owned(),
                    ));
                }
                if !rendered.contains(&sample.unsubscribe_url) {
                    return Err(invalid(
                        "it must show the unsubscribe link {{ unsubscribe_url }}".to_owned(),
                    ));
                }
            }
            TemplateKind::Sms => {
                if !rendered.contains(&sample.activation_url) {
                    return Err(invalid(
                        "it must show the activation link {{ activation_url }}".to_owned(),
                    ));
                }
                check_sms(&rendered, &sample).map_err(|err| match err {
                    TemplateError::SmsMissingPractice => invalid(
                        "it must name the practice with {{ practice_name }} (R13)".to_owned(),
                    ),
                    other => invalid(format!(
                        "with a sample invite (practice name of 25 characters, link of 60): {other}"
                    )),
                })?;
            }
        }

        self.env
            .add_template_owned(name.clone(), source.to_owned())
            .map_err(|err| invalid(err.to_string()))?;
        self.overrides.insert(name);
        Ok(())
    }

    /// The source a practice's invites use for one part, and whether it is
    /// the practice's own override (else the built-in template), for the
    /// administrator's template editor.
    pub fn source(
        &self,
        practice_code: &str,
        language: Language,
        kind: TemplateKind,
    ) -> Option<(String, bool)> {
        let own = override_name(practice_code, language, kind);
        let (name, is_own) = if self.overrides.contains(&own) {
            (own, true)
        } else {
            (builtin_name(language, kind), false)
        };
        let template = self.env.get_template(&name).ok()?;
        Some((template.source().to_string(), is_own))
    }

    fn render_part(
        &self,
        practice_code: &str,
        ctx: &InviteContext,
        kind: TemplateKind,
    ) -> Result<String, TemplateError> {
        let practice = override_name(practice_code, ctx.language, kind);
        let name = if self.overrides.contains(&practice) {
            practice
        } else {
            builtin_name(ctx.language, kind)
        };
        // Only the error kind goes into the message: minijinja's details can
        // quote values, and the values here are the patient's.
        let rendered = self
            .env
            .get_template(&name)
            .and_then(|template| template.render(template_context(ctx)))
            .map_err(|err| TemplateError::Render {
                template: name.clone(),
                reason: err.kind().to_string(),
            })?;
        let rendered = normalise(kind, &rendered);
        if rendered.is_empty() {
            return Err(TemplateError::Empty(kind));
        }
        Ok(rendered)
    }

    /// Renders the invite email, using the practice's overrides where it has
    /// them.
    pub fn render_email(
        &self,
        practice_code: &str,
        ctx: &InviteContext,
    ) -> Result<RenderedEmail, TemplateError> {
        Ok(RenderedEmail {
            subject: self.render_part(practice_code, ctx, TemplateKind::EmailSubject)?,
            text: self.render_part(practice_code, ctx, TemplateKind::EmailText)?,
            html: self.render_part(practice_code, ctx, TemplateKind::EmailHtml)?,
        })
    }

    /// Renders the invite text. R13: the result is at most 160 characters,
    /// names the practice and tells how to opt out (the word STOP); otherwise
    /// an error, never a truncated text.
    pub fn render_sms(
        &self,
        practice_code: &str,
        ctx: &InviteContext,
    ) -> Result<String, TemplateError> {
        let text = self.render_part(practice_code, ctx, TemplateKind::Sms)?;
        check_sms(&text, ctx)?;
        Ok(text)
    }
}

/// Subjects and texts are one line with single spaces; bodies lose only
/// surrounding blank space (and end with one newline for the text part).
fn normalise(kind: TemplateKind, rendered: &str) -> String {
    match kind {
        TemplateKind::EmailSubject | TemplateKind::Sms => {
            rendered.split_whitespace().collect::<Vec<_>>().join(" ")
        }
        TemplateKind::EmailText | TemplateKind::EmailHtml => {
            let trimmed = rendered.trim();
            if trimmed.is_empty() {
                String::new()
            } else {
                format!("{trimmed}\n")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(language: Language) -> InviteContext {
        InviteContext {
            first_name: "Maria".to_owned(),
            practice_name: "Main Street Clinic".to_owned(),
            activation_url: "https://enroll.example/activate/abc123".to_owned(),
            unsubscribe_url: "https://enroll.example/unsubscribe/7/f00d".to_owned(),
            language,
        }
    }

    #[test]
    fn builtin_templates_compile() {
        let templates = Templates::builtin();
        for (language, kind, _) in BUILTIN {
            templates
                .env
                .get_template(&builtin_name(*language, *kind))
                .unwrap();
        }
    }

    #[test]
    fn builtin_sms_fixed_text_is_gsm7_ascii() {
        // Accented letters like á or í are outside the GSM-7 alphabet and would
        // turn the text into UCS-2 (70 characters a segment).
        for (_, kind, source) in BUILTIN {
            if *kind == TemplateKind::Sms {
                assert!(source.is_ascii(), "{source}");
            }
        }
    }

    #[test]
    fn html_escaping_keeps_slashes() {
        let templates = Templates::builtin();
        let mut c = ctx(Language::English);
        c.first_name = "O'Brien & <b>".to_owned();
        let email = templates.render_email("p1", &c).unwrap();
        assert!(email.html.contains("O&#39;Brien &amp; &lt;b&gt;"));
        assert!(
            email
                .html
                .contains("href=\"https://enroll.example/activate/abc123\"")
        );
        assert!(email.text.contains("Hi O'Brien & <b>,"));
    }

    #[test]
    fn subject_and_sms_are_one_line() {
        let templates = Templates::builtin();
        for language in [Language::English, Language::Spanish] {
            let c = ctx(language);
            let email = templates.render_email("p1", &c).unwrap();
            assert!(!email.subject.contains('\n'));
            assert!(email.text.ends_with('\n'));
            let sms = templates.render_sms("p1", &c).unwrap();
            assert!(!sms.contains('\n'));
        }
    }

    #[test]
    fn sms_checks() {
        let c = ctx(Language::English);
        assert_eq!(
            check_sms("Main Street Clinic: hello. Reply STOP to opt out", &c),
            Ok(())
        );
        assert_eq!(
            check_sms("Hello. Reply STOP to opt out", &c),
            Err(TemplateError::SmsMissingPractice)
        );
        assert_eq!(
            check_sms("Main Street Clinic: hello, stop by", &c),
            Err(TemplateError::SmsMissingOptOut)
        );
        let long = format!("Main Street Clinic STOP {}", "x".repeat(140));
        assert_eq!(
            check_sms(&long, &c),
            Err(TemplateError::SmsTooLong { len: 164 })
        );
        // Characters, not bytes: 160 two-byte letters fit.
        let accented = format!("Main Street Clinic STOP {}", "é".repeat(136));
        assert_eq!(accented.chars().count(), 160);
        assert_eq!(check_sms(&accented, &c), Ok(()));
    }

    #[test]
    fn rejected_override_leaves_templates_unchanged() {
        let mut templates = Templates::builtin()
            .with_override(
                "p1",
                Language::English,
                TemplateKind::EmailSubject,
                "Hello from {{ practice_name }}",
            )
            .unwrap();
        let err = templates
            .add_override(
                "p1",
                Language::English,
                TemplateKind::EmailSubject,
                "{{ dob }}",
            )
            .unwrap_err();
        assert!(
            matches!(err, TemplateError::InvalidOverride { .. }),
            "{err}"
        );
        let email = templates
            .render_email("p1", &ctx(Language::English))
            .unwrap();
        assert_eq!(email.subject, "Hello from Main Street Clinic");
    }

    #[test]
    fn practice_codes_are_checked() {
        for bad in ["", "a/b", "has space", &"x".repeat(65)] {
            let err = Templates::builtin()
                .with_override(bad, Language::English, TemplateKind::EmailSubject, "Hi")
                .unwrap_err();
            assert_eq!(err, TemplateError::InvalidPracticeCode(bad.to_owned()));
        }
    }
}
