//! Invite templates in force: the built-in ones plus each practice's
//! overrides, which administrators save through the API and which are kept
//! in the settings table (`template/<practice code>/<language>/<kind>`), so
//! that every instance and every restart uses them.

use std::sync::{Arc, RwLock};

use enroll_notify::{InviteContext, Language, TemplateError, TemplateKind, Templates};

use crate::links::Links;
use enroll_store::{Store, StoreError};

/// Shared by the API (which changes them) and the dispatcher (which renders).
pub type SharedTemplates = Arc<RwLock<Templates>>;

const PREFIX: &str = "template/";

pub fn parse_kind(raw: &str) -> Option<TemplateKind> {
    KINDS
        .iter()
        .find(|(name, _)| *name == raw)
        .map(|(_, kind)| *kind)
}

/// The template kinds as the API and the editor name them, in the order
/// the editor shows them.
pub const KINDS: [(&str, TemplateKind); 4] = [
    ("subject", TemplateKind::EmailSubject),
    ("text", TemplateKind::EmailText),
    ("html", TemplateKind::EmailHtml),
    ("sms", TemplateKind::Sms),
];

/// The invite a preview renders: a sample first name and sample links, the
/// practice's real name.
pub fn sample_invite(
    links: &Links,
    practice_name: &str,
    language: Language,
    first_name: Option<String>,
) -> InviteContext {
    InviteContext {
        first_name: first_name.unwrap_or_else(|| "Alex".into()),
        practice_name: practice_name.to_string(),
        activation_url: links.activation_url("SAMPLE-TOKEN-22-CHARSX"),
        unsubscribe_url: links.unsubscribe_url(0),
        language,
    }
}

fn setting_key(practice_code: &str, language: &str, kind: &str) -> String {
    format!("{PREFIX}{practice_code}/{language}/{kind}")
}

/// The built-in templates with every stored override applied. An override
/// that no longer compiles is skipped with a warning (the built-in one is
/// used) rather than stopping the server.
pub async fn load(store: &Store) -> Result<SharedTemplates, StoreError> {
    let mut templates = Templates::builtin();
    for (key, source) in store.settings_with_prefix(PREFIX).await? {
        let parts: Vec<&str> = key[PREFIX.len()..].split('/').collect();
        let parsed = match parts.as_slice() {
            [code, language, kind] => Language::from_code(language)
                .zip(parse_kind(kind))
                .map(|(l, k)| (*code, l, k)),
            _ => None,
        };
        let Some((code, language, kind)) = parsed else {
            tracing::warn!(
                key,
                "ignoring a stored template with a key that is not understood"
            );
            continue;
        };
        if let Err(e) = templates.add_override(code, language, kind, &source) {
            tracing::warn!(key, error = %e, "ignoring a stored template that is not valid");
        }
    }
    Ok(Arc::new(RwLock::new(templates)))
}

/// Why an override was not saved, in words for the administrator.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("unknown language {0:?}: use en or es")]
    UnknownLanguage(String),
    #[error("unknown template {0:?}: use subject, text, html or sms")]
    UnknownKind(String),
    #[error(
        "{0} (an invite template may use only first_name, practice_name, activation_url and unsubscribe_url)"
    )]
    Invalid(#[from] TemplateError),
}

/// Checks an override, stores it, and puts it in force.
pub async fn save(
    store: &Store,
    templates: &SharedTemplates,
    practice_code: &str,
    language: &str,
    kind: &str,
    source: &str,
) -> Result<Result<(), SaveError>, StoreError> {
    let Some(lang) = Language::from_code(language) else {
        return Ok(Err(SaveError::UnknownLanguage(language.to_string())));
    };
    let Some(k) = parse_kind(kind) else {
        return Ok(Err(SaveError::UnknownKind(kind.to_string())));
    };
    let mut candidate = templates.read().unwrap_or_else(|p| p.into_inner()).clone();
    if let Err(e) = candidate.add_override(practice_code, lang, k, source) {
        return Ok(Err(e.into()));
    }
    store
        .put_setting(&setting_key(practice_code, language, kind), source)
        .await?;
    *templates.write().unwrap_or_else(|p| p.into_inner()) = candidate;
    Ok(Ok(()))
}
