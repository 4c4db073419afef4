//! "Enroll in person" from the chart's Patient Portal menu: a manual invite
//! through the channel "in person" (`Store::invite_in_person`: R4, R7 and
//! R9 as for Enroll Now, counted toward the cap, on the timeline), then a
//! page to turn toward the patient with a QR code of the fresh link, the
//! link written out and a short code, and a one-page letter to print in
//! the patient's language. Creating, showing and printing are each audited.

use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use enroll_core::{Language, LinkState, Refusal, format_short_code};
use enroll_store::AuditTarget;
use enroll_store::{InPersonInvite, InPersonOutcome, Patient, Practice};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use minijinja::context;
use serde::Deserialize;

use super::chart::{refusal_words, scoped_patient, source};
use super::search::display_name;
use super::session::SignedIn;
use super::{internal, local_time, not_found, staff_page};
use crate::AppState;
use crate::activation::masked;
use crate::activation::text::texts;

#[derive(Deserialize, Default)]
pub(crate) struct CreateForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /patients/{id}/in-person`: makes the invite and shows it, or goes
/// back to the chart with the refusal in words (and the form opened at
/// the first missing field, as Enroll Now does).
pub(crate) async fn create(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<i64>,
    Form(form): Form<CreateForm>,
) -> Response {
    if let Err(refused) = signed_in.check_csrf(&form.csrf) {
        return refused.into_response();
    }
    let (_, practice) = match scoped_patient(&state, &signed_in, id).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let now = state.clock.now();
    let outcome = state
        .store
        .invite_in_person(
            id,
            &source(&signed_in).audited("patient.in_person_invite"),
            state.activation.link_lifetime,
            now,
        )
        .await;
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(e) => return internal(e),
    };
    match outcome {
        InPersonOutcome::Ready { invite_id } => {
            Redirect::to(&format!("/patients/{id}/in-person/{invite_id}")).into_response()
        }
        InPersonOutcome::Refused { refusal } => {
            let words = refusal_words(&refusal, &practice.schedule.tz)
                .replace("Update now opens the form there", "the form is open there");
            let notice: String = url::form_urlencoded::byte_serialize(words.as_bytes()).collect();
            let update = match &refusal {
                Refusal::MissingFields { problems } => problems
                    .first()
                    .map(|p| format!("&update={}", p.field.key()))
                    .unwrap_or_default(),
                _ => String::new(),
            };
            Redirect::to(&format!("/patients/{id}?notice={notice}{update}")).into_response()
        }
        // The chart's page says where it was merged, with the link.
        InPersonOutcome::MergedInto { .. } => {
            Redirect::to(&format!("/patients/{id}")).into_response()
        }
    }
}

/// The patient, its practice and the in-person invite, or the answer to
/// give instead (404 outside the user's practices or for another invite).
async fn scoped_invite(
    state: &AppState,
    signed_in: &SignedIn,
    id: i64,
    invite_id: i64,
) -> Result<(Patient, Practice, InPersonInvite), Response> {
    let (patient, practice) = scoped_patient(state, signed_in, id).await?;
    let now = state.clock.now();
    match state
        .store
        .in_person_invite(id, invite_id, &state.activation.rules, now)
        .await
    {
        Ok(Some(invite)) => Ok((patient, practice, invite)),
        Ok(None) => Err(not_found()),
        Err(e) => Err(internal(e)),
    }
}

async fn audit(state: &AppState, signed_in: &SignedIn, action: &str, id: i64) -> Option<Response> {
    signed_in
        .audit(
            state,
            signed_in.audit_line(action, AuditTarget::Patient(id)),
        )
        .await
        .err()
        .map(internal)
}

/// The QR code of `url` as an inline SVG, labelled for screen readers.
fn qr_svg(url: &str, label: &str) -> Option<String> {
    let code =
        qrcode::QrCode::with_error_correction_level(url.as_bytes(), qrcode::EcLevel::M).ok()?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(240, 240)
        .quiet_zone(true)
        .build();
    // Without the XML declaration, and sized by the page's CSS.
    let start = svg.find("<svg")?;
    let label = minijinja::HtmlEscape(label).to_string();
    Some(svg[start..].replacen(
        "<svg ",
        &format!("<svg role=\"img\" aria-label=\"{label}\" class=\"qr\" "),
        1,
    ))
}

/// Why a link does not work, for the front desk.
fn state_words(state: LinkState) -> &'static str {
    match state {
        LinkState::Usable => "it works",
        LinkState::Used => "it was used: the patient's account is set up",
        LinkState::Locked => "it was locked after too many wrong answers; make a new one",
        LinkState::Expired => {
            "it expired, or the patient's email or cell phone changed since; make a new one"
        }
    }
}

/// "example.org/code" for `https://example.org/code`: shorter to type.
fn without_scheme(url: &str) -> &str {
    url.split_once("://").map_or(url, |(_, rest)| rest)
}

fn language_of(invite: &InPersonInvite) -> Language {
    Language::from_preference(invite.preferred_language.as_deref())
}

fn language_name(language: Language) -> &'static str {
    match language {
        Language::English => "English",
        Language::Spanish => "Spanish",
    }
}

#[derive(Deserialize)]
pub(crate) struct InviteParams {
    id: i64,
    invite: i64,
}

/// `GET /patients/{id}/in-person/{invite}`: the screen to show the patient.
pub(crate) async fn show(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(InviteParams { id, invite }): Path<InviteParams>,
) -> Response {
    let (patient, practice, invite) = match scoped_invite(&state, &signed_in, id, invite).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    if let Some(failed) = audit(&state, &signed_in, "patient.in_person_show", id).await {
        return failed;
    }
    let tz = &practice.schedule.tz;
    let link = state.links.activation_url(&invite.token);
    let usable = invite.state == LinkState::Usable;
    let ctx = context! {
        patient => context! { id => patient.id, name => display_name(&patient) },
        invite_id => invite.invite_id,
        usable,
        state_words => state_words(invite.state),
        qr => if usable { qr_svg(&link, "QR code of the patient's activation link") } else { None },
        link,
        code => format_short_code(&invite.short_code),
        code_address => without_scheme(&state.links.short_code_url()),
        expires => local_time(invite.expires_at, tz),
        code_to => masked(&invite.sent_to),
        language => language_name(language_of(&invite)),
    };
    staff_page(StatusCode::OK, "staff_in_person.html", &signed_in, ctx)
}

/// `GET /patients/{id}/in-person/{invite}/letter`: the printable letter in
/// the patient's language.
pub(crate) async fn letter(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(InviteParams { id, invite }): Path<InviteParams>,
) -> Response {
    let (patient, practice, invite) = match scoped_invite(&state, &signed_in, id, invite).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    if invite.state != LinkState::Usable {
        return Redirect::to(&format!("/patients/{id}/in-person/{}", invite.invite_id))
            .into_response();
    }
    if let Some(failed) = audit(&state, &signed_in, "patient.in_person_letter", id).await {
        return failed;
    }
    let language = language_of(&invite);
    let t = texts(language);
    let tz = &practice.schedule.tz;
    let link = state.links.activation_url(&invite.token);
    let name = invite
        .first_name
        .clone()
        .or_else(|| patient.demographics.first_name.clone())
        .unwrap_or_default();
    let ctx = context! {
        t,
        name,
        practice_name => invite.practice_name,
        patient_id => id,
        invite_id => invite.invite_id,
        qr => qr_svg(&link, t.letter_qr_label),
        code => format_short_code(&invite.short_code),
        code_address => without_scheme(&state.links.short_code_url()),
        code_to => masked(&invite.sent_to),
        valid_until => long_date(invite.expires_at, tz, language),
        today => long_date(state.clock.now(), tz, language),
    };
    staff_page(
        StatusCode::OK,
        "staff_in_person_letter.html",
        &signed_in,
        ctx,
    )
}

/// "December 25, 2026" or "25 de diciembre de 2026".
fn long_date(at: Timestamp, tz: &TimeZone, language: Language) -> String {
    const MESES: [&str; 12] = [
        "enero",
        "febrero",
        "marzo",
        "abril",
        "mayo",
        "junio",
        "julio",
        "agosto",
        "septiembre",
        "octubre",
        "noviembre",
        "diciembre",
    ];
    let date = tz.to_datetime(at).date();
    match language {
        Language::English => date.strftime("%B %-d, %Y").to_string(),
        Language::Spanish => {
            let month = usize::try_from(date.month() - 1).unwrap_or(0);
            format!(
                "{} de {} de {}",
                date.day(),
                MESES.get(month).copied().unwrap_or(""),
                date.year()
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_qr_code_is_an_inline_labelled_svg() {
        let svg = qr_svg("https://invites.example.org/a/AAAAAAAAAAAAAAAAAAAAAA", "QR")
            .unwrap_or_default();
        assert!(
            svg.starts_with("<svg role=\"img\" aria-label=\"QR\""),
            "{svg}"
        );
        assert!(svg.contains("<path"), "{svg}");
    }

    #[test]
    fn dates_read_in_the_patients_language() {
        let at: Timestamp = "2026-12-25T15:00:00Z".parse().unwrap_or_default();
        let tz = TimeZone::UTC;
        assert_eq!(long_date(at, &tz, Language::English), "December 25, 2026");
        assert_eq!(
            long_date(at, &tz, Language::Spanish),
            "25 de diciembre de 2026"
        );
        assert_eq!(without_scheme("https://x.org/code"), "x.org/code");
    }
}
