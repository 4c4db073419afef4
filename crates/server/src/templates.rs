//! Invite templates in force: the built-in ones plus each practice's
//! overrides, which administrators save through the API and which are kept
//! in the settings table (`template/<practice code>/<language>/<kind>`), so
//! that every instance and every restart uses them.

use std::sync::{Arc, RwLock};

use enroll_notify::{InviteContext, Language, TemplateError, TemplateKind, Templates};

use crate::links::Links;
use enroll_store::{Audit, Store, StoreError};
use jiff::Timestamp;

/// The templates in force in this process, shared by the pages and the API
/// (which change them) and the dispatcher (which renders). Every instance
/// on one database keeps its own copy; [`SharedTemplates::refresh`] brings
/// it up to date when another instance has saved a template, which every
/// save marks with a new [`VERSION_KEY`] in the same transaction.
#[derive(Clone)]
pub struct SharedTemplates(Arc<RwLock<InForce>>);

struct InForce {
    templates: Templates,
    /// The [`VERSION_KEY`] value these templates were loaded at.
    version: Option<String>,
}

/// The setting that changes with every template saved.
const VERSION_KEY: &str = "templates-version";

impl SharedTemplates {
    /// A copy of the templates in force (cheap: the compiled templates are
    /// shared), so no lock is held while rendering.
    pub fn current(&self) -> Templates {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .templates
            .clone()
    }

    fn version(&self) -> Option<String> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .version
            .clone()
    }

    fn replace(&self, templates: Templates, version: Option<String>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = InForce { templates, version };
    }

    /// Reloads the templates when another instance has saved one since
    /// they were loaded; one read of a setting otherwise.
    pub async fn refresh(&self, store: &Store) -> Result<(), StoreError> {
        let version = store.setting(VERSION_KEY).await?;
        if version != self.version() {
            // The version is read before the templates, so a save between
            // the two reads makes the next refresh load again.
            let templates = load_templates(store).await?;
            self.replace(templates, version);
        }
        Ok(())
    }
}

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
    let version = store.setting(VERSION_KEY).await?;
    let templates = load_templates(store).await?;
    Ok(SharedTemplates(Arc::new(RwLock::new(InForce {
        templates,
        version,
    }))))
}

async fn load_templates(store: &Store) -> Result<Templates, StoreError> {
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
    Ok(templates)
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
    let part = TemplatePart {
        practice_code,
        language,
        kind,
    };
    save_part(store, templates, &part, source, None).await
}

/// Which template an override replaces.
pub struct TemplatePart<'a> {
    pub practice_code: &'a str,
    pub language: &'a str,
    pub kind: &'a str,
}

/// [`save`] that a staff member asked for: the override and its audit
/// line in one transaction.
pub async fn save_audited(
    store: &Store,
    templates: &SharedTemplates,
    part: &TemplatePart<'_>,
    source: &str,
    audit: &Audit,
    now: Timestamp,
) -> Result<Result<(), SaveError>, StoreError> {
    save_part(store, templates, part, source, Some((audit, now))).await
}

async fn save_part(
    store: &Store,
    templates: &SharedTemplates,
    part: &TemplatePart<'_>,
    source: &str,
    audit: Option<(&Audit, Timestamp)>,
) -> Result<Result<(), SaveError>, StoreError> {
    let TemplatePart {
        practice_code,
        language,
        kind,
    } = *part;
    let Some(lang) = Language::from_code(language) else {
        return Ok(Err(SaveError::UnknownLanguage(language.to_string())));
    };
    let Some(k) = parse_kind(kind) else {
        return Ok(Err(SaveError::UnknownKind(kind.to_string())));
    };
    // Up to date first, so the candidate does not drop another instance's
    // recent save.
    templates.refresh(store).await?;
    let mut candidate = templates.current();
    if let Err(e) = candidate.add_override(practice_code, lang, k, source) {
        return Ok(Err(e.into()));
    }
    let version = crate::ui::session::random_secret(16);
    let key = setting_key(practice_code, language, kind);
    let pairs = [(key.as_str(), source), (VERSION_KEY, version.as_str())];
    match audit {
        Some((audit, now)) => store.put_settings_audited(&pairs, audit, now).await?,
        None => store.put_settings(&pairs).await?,
    }
    templates.replace(candidate, Some(version));
    Ok(Ok(()))
}
