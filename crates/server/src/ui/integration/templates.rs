//! The invite template editor (R12): per language, the email subject, text
//! and HTML and the text message, each as the practice's invites use it
//! now (its own or the built-in one), with a preview of what a patient
//! would receive. A template that uses anything but the four invite
//! variables, or a text message that breaks R13, is refused with the
//! reason next to it.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::Form;
use enroll_notify::{Language, Templates};
use enroll_store::Practice;
use minijinja::context;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::super::session::{Refused, SignedIn};
use super::super::{internal, staff_page};
use super::{AdminForm, AdminPractice, back_to_page, change_audit, csrf_field};
use crate::AppState;
use crate::templates::{KINDS, TemplatePart, sample_invite, save_audited};

#[derive(Deserialize)]
pub(crate) struct TemplatesQuery {
    language: Option<String>,
    notice: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct TemplatesForm {
    csrf: String,
    language: String,
    /// "preview" or "save"
    action: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    html: String,
    #[serde(default)]
    sms: String,
}

csrf_field!(TemplatesForm);

impl TemplatesForm {
    fn typed(&self, kind: &str) -> &str {
        match kind {
            "subject" => &self.subject,
            "text" => &self.text,
            "html" => &self.html,
            _ => &self.sms,
        }
    }
}

#[derive(Serialize)]
struct PartView {
    key: &'static str,
    label: &'static str,
    source: String,
    /// The practice's own template (else the built-in one).
    own: bool,
    error: Option<String>,
}

#[derive(Serialize)]
struct PreviewView {
    subject: String,
    text: String,
    html: String,
    sms: Option<String>,
    sms_chars: usize,
    sms_problem: Option<String>,
}

fn label(kind: &str) -> &'static str {
    match kind {
        "subject" => "Email subject",
        "text" => "Email text (for mail programs that show no HTML)",
        "html" => "Email HTML",
        _ => "Text message (at most 160 characters; names the practice; says STOP)",
    }
}

fn language_of(raw: Option<&str>) -> Result<Language, Refused> {
    match raw {
        None | Some("") => Ok(Language::English),
        Some(code) => Language::from_code(code).ok_or(Refused(
            StatusCode::BAD_REQUEST,
            "Unknown language: use en (English) or es (Spanish).",
        )),
    }
}

/// The templates in force, brought up to date with other instances'.
async fn current_templates(state: &AppState) -> Result<Templates, Response> {
    state
        .templates
        .refresh(&state.store)
        .await
        .map_err(internal)?;
    Ok(state.templates.current())
}

/// `/admin/practices/{id}/templates?language=en`
pub(crate) async fn templates_page(
    State(state): State<AppState>,
    AdminPractice(signed_in, practice, Query(q)): AdminPractice<Query<TemplatesQuery>>,
) -> Response {
    let language = match language_of(q.language.as_deref()) {
        Ok(language) => language,
        Err(refused) => return refused.into_response(),
    };
    let templates = match current_templates(&state).await {
        Ok(templates) => templates,
        Err(failed) => return failed,
    };
    let parts = parts_in_force(&templates, &practice, language, &BTreeMap::new());
    let editor = Editor {
        practice: &practice,
        language,
        parts,
        preview: Some(preview(&state, &templates, &practice, language)),
        notice: q.notice.as_deref(),
    };
    editor.render(&signed_in, StatusCode::OK)
}

/// Each part as the practice's invites use it now.
fn parts_in_force(
    templates: &Templates,
    practice: &Practice,
    language: Language,
    errors: &BTreeMap<&'static str, String>,
) -> Vec<PartView> {
    KINDS
        .iter()
        .map(|&(key, kind)| {
            let (source, own) = templates
                .source(&practice.code, language, kind)
                .unwrap_or_default();
            PartView {
                key,
                label: label(key),
                source,
                own,
                error: errors.get(key).cloned(),
            }
        })
        .collect()
}

fn preview(
    state: &AppState,
    templates: &Templates,
    practice: &Practice,
    language: Language,
) -> PreviewView {
    let invite = sample_invite(&state.links, &practice.name, language, None);
    let (subject, text, html) = match templates.render_email(&practice.code, &invite) {
        Ok(email) => (email.subject, email.text, email.html),
        Err(e) => (
            format!("(cannot be shown: {e})"),
            String::new(),
            String::new(),
        ),
    };
    let (sms, sms_problem) = match templates.render_sms(&practice.code, &invite) {
        Ok(sms) => (Some(sms), None),
        Err(e) => (None, Some(e.to_string())),
    };
    PreviewView {
        subject,
        text,
        html,
        sms_chars: sms.as_deref().map_or(0, |s| s.chars().count()),
        sms,
        sms_problem,
    }
}

struct Editor<'a> {
    practice: &'a Practice,
    language: Language,
    parts: Vec<PartView>,
    preview: Option<PreviewView>,
    notice: Option<&'a str>,
}

impl Editor<'_> {
    fn render(self, signed_in: &SignedIn, status: StatusCode) -> Response {
        let languages: Vec<_> = Language::ALL
            .iter()
            .map(|l| json!({ "code": l.code(), "name": language_name(*l) }))
            .collect();
        let mut page = staff_page(
            status,
            "staff_templates.html",
            signed_in,
            context! {
                practice => json!({ "id": self.practice.id, "code": self.practice.code, "name": self.practice.name }),
                language => self.language.code(),
                language_name => language_name(self.language),
                languages,
                parts => self.parts,
                preview => self.preview,
                notice => self.notice,
            },
        );
        // The preview frames the email, whose styles are inline.
        page.headers_mut().insert(
            axum::http::header::CONTENT_SECURITY_POLICY,
            axum::http::HeaderValue::from_static(crate::pages::EMAIL_PREVIEW_POLICY),
        );
        page
    }
}

fn language_name(language: Language) -> &'static str {
    match language {
        Language::English => "English",
        Language::Spanish => "Spanish",
    }
}

/// Preview or save what was typed. Only the parts that differ from what
/// is in force become overrides; each is checked first, and nothing is
/// saved unless every changed part passes.
pub(crate) async fn save_templates(
    State(state): State<AppState>,
    AdminForm(signed_in, practice, Form(form)): AdminForm<Form<TemplatesForm>>,
) -> Response {
    let language = match language_of(Some(&form.language)) {
        Ok(language) => language,
        Err(refused) => return refused.into_response(),
    };
    let in_force = match current_templates(&state).await {
        Ok(templates) => templates,
        Err(failed) => return failed,
    };
    let mut candidate = in_force.clone();
    let mut errors = BTreeMap::new();
    let mut changed = Vec::new();
    for &(key, kind) in &KINDS {
        let typed = normalise_newlines(form.typed(key));
        let (current, _) = in_force
            .source(&practice.code, language, kind)
            .unwrap_or_default();
        if typed == current {
            continue;
        }
        match candidate.add_override(&practice.code, language, kind, &typed) {
            Ok(()) => changed.push((key, current, typed)),
            Err(e) => {
                errors.insert(key, e.to_string());
            }
        }
    }
    let typed_parts = |errors: &BTreeMap<&'static str, String>| -> Vec<PartView> {
        let in_force_parts = parts_in_force(&in_force, &practice, language, errors);
        in_force_parts
            .into_iter()
            .map(|part| PartView {
                source: normalise_newlines(form.typed(part.key)),
                ..part
            })
            .collect()
    };
    if !errors.is_empty() || form.action == "preview" {
        let status = if errors.is_empty() {
            StatusCode::OK
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        let notice = errors
            .is_empty()
            .then_some("This is a preview of what you typed; nothing is saved yet.");
        let editor = Editor {
            practice: &practice,
            language,
            parts: typed_parts(&errors),
            preview: errors
                .is_empty()
                .then(|| preview(&state, &candidate, &practice, language)),
            notice,
        };
        return editor.render(&signed_in, status);
    }
    for (key, before, after) in &changed {
        let audit = change_audit(
            &signed_in,
            "practice.template",
            &practice,
            json!({ "language": language.code(), "part": key, "source": before }),
            json!({ "language": language.code(), "part": key, "source": after }),
        );
        let part = TemplatePart {
            practice_code: &practice.code,
            language: language.code(),
            kind: key,
        };
        let now = state.clock.now();
        match save_audited(&state.store, &state.templates, &part, after, &audit, now).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return (StatusCode::UNPROCESSABLE_ENTITY, e.to_string()).into_response(),
            Err(e) => return internal(e),
        }
    }
    let notice = match changed.len() {
        0 => "Nothing was changed.".to_string(),
        1 => "The template is saved; invites use it from now on.".to_string(),
        n => format!("{n} templates are saved; invites use them from now on."),
    };
    back_to_page(
        &format!(
            "/admin/practices/{}/templates?language={}",
            practice.id,
            language.code()
        ),
        &notice,
    )
}

/// Browsers send a textarea's lines with CR LF; the stored templates use LF.
fn normalise_newlines(text: &str) -> String {
    text.replace("\r\n", "\n")
}
