//! The chart: a banner with the Patient Portal icon (its look says the
//! status), the R11 confirmation of the six required fields, the
//! demographics form, encounters and appointments, invite history and the
//! timeline in words. Enroll Now, confirm and the patient's response are
//! answered in place by the script, or by a redirect without it.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use enroll_core::{Demographics, Field, FieldProblem, PatientResponse, Refusal};
use enroll_store::AuditTarget;
use enroll_store::{Chart, EnrollOutcome, Patient, Practice, Source, StoreError};
use jiff::Timestamp;
use jiff::civil::Date;
use minijinja::context;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::search::{age_on, display_name};
use super::session::SignedIn;
use super::words::{invite_words, status_line, timeline_words};
use super::{internal, local_time, not_found, staff_page};
use crate::AppState;

pub(super) fn source(signed_in: &SignedIn) -> Source {
    Source::new("staff", Some(&signed_in.user.username))
}

/// The patient, if it is one of the user's practices' (else 404, as if
/// it did not exist), with its practice.
pub(super) async fn scoped_patient(
    state: &AppState,
    signed_in: &SignedIn,
    id: i64,
) -> Result<(Patient, Practice), Response> {
    let patient = state.store.patient(id).await.map_err(internal)?;
    let Some(patient) = patient.filter(|p| signed_in.user.scope.allows(p.practice_id)) else {
        return Err(not_found());
    };
    let practice = state
        .store
        .practice(patient.practice_id)
        .await
        .map_err(internal)?
        .ok_or_else(not_found)?;
    Ok((patient, practice))
}

#[derive(Deserialize)]
pub(crate) struct ChartQuery {
    /// `update=email`: open the form at this field; saving sends the invite.
    update: Option<String>,
    saved: Option<String>,
    notice: Option<String>,
}

/// One row of the demographics form.
#[derive(Serialize)]
struct FormField {
    key: &'static str,
    label: &'static str,
    value: String,
    required: bool,
    problem: Option<String>,
    input_type: &'static str,
}

/// "email address is missing" -> "Email address is missing".
pub(super) fn sentence(words: &str) -> String {
    let mut chars = words.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

fn form_fields(values: &Demographics, problems: &[FieldProblem]) -> Vec<FormField> {
    Field::ALL
        .into_iter()
        .map(|field| FormField {
            key: field.key(),
            label: field.heading(),
            value: values.get(field).unwrap_or("").to_string(),
            required: field.is_required(),
            problem: problems
                .iter()
                .find(|p| p.field == field)
                .map(|p| sentence(&p.message())),
            input_type: match field {
                Field::DateOfBirth => "date",
                Field::Email => "email",
                Field::CellPhone => "tel",
                _ => "text",
            },
        })
        .collect()
}

pub(crate) async fn page(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<i64>,
    Query(query): Query<ChartQuery>,
) -> Response {
    let (_, practice) = match scoped_patient(&state, &signed_in, id).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let now = state.clock.now();
    let chart = match state.store.chart(id, now).await {
        Ok(Some(chart)) => chart,
        Ok(None) => return not_found(),
        Err(e) => return internal(e),
    };
    if let Err(e) = signed_in
        .audit(
            &state,
            signed_in.audit_line("patient.view", AuditTarget::Patient(id)),
        )
        .await
    {
        return internal(e);
    }
    let survivor = match surviving_chart(&state, &chart.patient).await {
        Ok(survivor) => survivor,
        Err(e) => return internal(e),
    };
    let values = chart.patient.demographics.clone();
    render_chart(
        &signed_in,
        &chart,
        &practice,
        &values,
        &chart.problems,
        ChartNotes {
            update: query.update.as_deref(),
            saved: query.saved.is_some(),
            notice: query.notice.as_deref(),
            status: StatusCode::OK,
            merged_into: survivor.as_ref(),
        },
        now,
    )
}

/// The chart an HL7 A40 merged this one into, for the page's "merged into"
/// line and link; none for a chart in use.
async fn surviving_chart(
    state: &AppState,
    patient: &Patient,
) -> Result<Option<Patient>, StoreError> {
    match patient.merged_into {
        Some(survivor) => state.store.patient(survivor).await,
        None => Ok(None),
    }
}

/// What Enroll Now answers on a chart merged away: nothing is sent from
/// it (its invites moved to the survivor, which the page links to).
fn merged_words(survivor: Option<&Patient>) -> String {
    let which = survivor.map_or_else(
        || "another chart".to_string(),
        |s| format!("the chart of {} (MRN {})", display_name(s), s.mrn),
    );
    format!(
        "Nothing was sent: this chart was merged into {which}, which holds its invites. \
         Invite the patient from that chart."
    )
}

struct ChartNotes<'a> {
    update: Option<&'a str>,
    saved: bool,
    notice: Option<&'a str>,
    status: StatusCode,
    /// The surviving chart, when this one was merged away.
    merged_into: Option<&'a Patient>,
}

fn render_chart(
    signed_in: &SignedIn,
    chart: &Chart,
    practice: &Practice,
    values: &Demographics,
    problems: &[FieldProblem],
    notes: ChartNotes<'_>,
    now: Timestamp,
) -> Response {
    let tz = &practice.schedule.tz;
    let p = &chart.patient;
    let (badge, badge_class) = chart.status.badge();
    let required: Vec<_> = form_fields(&p.demographics, &chart.problems)
        .into_iter()
        .filter(|f| f.required)
        .collect();
    let invites: Vec<_> = chart
        .invites
        .iter()
        .rev()
        .map(|i| invite_words(i, &chart.timeline, tz))
        .collect();
    let timeline: Vec<_> = chart
        .timeline
        .iter()
        .rev()
        .map(|e| {
            json!({ "at": local_time(e.at, tz), "words": timeline_words(e),
                    "by": e.actor.clone().unwrap_or_else(|| e.source.clone()) })
        })
        .collect();
    let visits: Vec<_> = chart
        .timeline
        .iter()
        .rev()
        .filter(|e| e.kind == "encounter" || e.kind.starts_with("appointment_"))
        .map(|e| json!({ "at": local_time(e.at, tz), "words": timeline_words(e) }))
        .collect();
    let today = practice.schedule.local_date(now);
    let age = p
        .demographics
        .date_of_birth
        .as_deref()
        .and_then(|d| d.parse::<Date>().ok())
        .map(|dob| age_on(dob, today));
    let ctx = context! {
        patient => context! {
            id => p.id,
            name => display_name(p),
            first_name => p.demographics.first_name.clone().unwrap_or_default(),
            dob => p.demographics.date_of_birth.clone().unwrap_or_default(),
            age,
            birth_sex => p.demographics.birth_sex.clone().unwrap_or_default(),
            mrn => p.mrn.clone(),
            practice => practice.name.clone(),
            response => p.response.map(PatientResponse::key),
        },
        status => context! {
            words => status_line(&chart.status, tz),
            badge,
            badge_class,
            sends => sends_in_30_days(chart),
        },
        confirmed => p.fields_confirmed_at.map(|at| context! {
            at => local_time(at, tz),
            by => p.fields_confirmed_by.clone().unwrap_or_default(),
        }),
        required,
        fields => form_fields(values, problems),
        invites,
        was_invited => !chart.invites.is_empty(),
        visits,
        timeline,
        update => notes.update,
        saved => notes.saved,
        notice => notes.notice,
        merged_into => notes.merged_into.map(|s| context! {
            id => s.id,
            name => display_name(s),
            mrn => s.mrn.clone(),
        }),
    };
    staff_page(notes.status, "staff_chart.html", signed_in, ctx)
}

fn sends_in_30_days(chart: &Chart) -> Option<usize> {
    match &chart.status {
        enroll_core::StaffStatus::Pending {
            sends_in_30_days, ..
        } => Some(*sends_in_30_days),
        _ => None,
    }
}

#[derive(Deserialize)]
pub(crate) struct DemographicsForm {
    csrf: String,
    first_name: Option<String>,
    last_name: Option<String>,
    date_of_birth: Option<String>,
    birth_sex: Option<String>,
    zip: Option<String>,
    email: Option<String>,
    cell_phone: Option<String>,
    /// "enroll": the form was opened by "Update now"; saving sends the invite.
    then: Option<String>,
}

impl DemographicsForm {
    fn demographics(&self) -> Demographics {
        Demographics {
            first_name: self.first_name.clone(),
            last_name: self.last_name.clone(),
            date_of_birth: self.date_of_birth.clone(),
            birth_sex: self.birth_sex.clone(),
            zip: self.zip.clone(),
            email: self.email.clone(),
            cell_phone: self.cell_phone.clone(),
        }
        .normalized()
    }
}

/// Saves the form. With `then=enroll` (Update now), a complete record is
/// then sent an invite, and a record still missing fields comes back with
/// them marked.
pub(crate) async fn save_demographics(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<i64>,
    Form(form): Form<DemographicsForm>,
) -> Response {
    if let Err(refused) = signed_in.check_csrf(&form.csrf) {
        return refused.into_response();
    }
    if let Err(response) = scoped_patient(&state, &signed_in, id).await {
        return response;
    }
    let now = state.clock.now();
    let demographics = form.demographics();
    let saved = match state
        .store
        .update_patient(
            id,
            &demographics,
            &source(&signed_in).audited("patient.update"),
            now,
        )
        .await
    {
        Ok(saved) => saved,
        Err(e) => return internal(e),
    };
    if form.then.as_deref() != Some("enroll") {
        return Redirect::to(&format!("/patients/{id}?saved=1")).into_response();
    }
    if queued_by_trigger(&saved) {
        let notice: String =
            url::form_urlencoded::byte_serialize(AUTO_INVITE_QUEUED.as_bytes()).collect();
        return Redirect::to(&format!("/patients/{id}?saved=1&notice={notice}")).into_response();
    }
    match enroll(&state, &signed_in, id, None).await {
        Ok(answer) => {
            let notice =
                url::form_urlencoded::byte_serialize(answer.message.as_bytes()).collect::<String>();
            let update = answer
                .missing
                .first()
                .map(|m| format!("&update={}", m.field))
                .unwrap_or_default();
            Redirect::to(&format!("/patients/{id}?saved=1&notice={notice}{update}")).into_response()
        }
        Err(response) => response,
    }
}

/// What "Update now" and the work list's resend say when the saved change
/// was itself a trigger that invites (R2): a second invite from Enroll
/// Now would reach the patient twice.
pub(super) const AUTO_INVITE_QUEUED: &str = "Saved: the change to a required field invites the patient (auto invite); no second invite was sent.";

/// True when saving made an auto invite that will go out (now or at the
/// schedule's opening).
pub(super) fn queued_by_trigger(saved: &enroll_store::SaveOutcome) -> bool {
    saved.triggers.iter().any(|t| {
        matches!(
            t.decision,
            enroll_core::AutoDecision::SendNow | enroll_core::AutoDecision::Queue { .. }
        )
    })
}

/// The answer to Enroll Now, for the script (JSON) and the page.
#[derive(Serialize)]
pub(crate) struct EnrollAnswer {
    /// sent | refused
    pub(super) result: &'static str,
    /// What happened, in one sentence for the front desk.
    pub(super) message: String,
    /// The fields to fill in first, in the order of the form.
    missing: Vec<MissingField>,
    /// When a refusal is the cap, the next possible send.
    next_possible_at: Option<String>,
    badge: &'static str,
    badge_class: &'static str,
    status_words: String,
}

#[derive(Serialize)]
struct MissingField {
    field: &'static str,
    label: &'static str,
    message: String,
}

#[derive(Deserialize, Default)]
pub(crate) struct EnrollForm {
    #[serde(default)]
    csrf: String,
    /// "resend": send again (a new invite; every rule of R9 applies).
    action: Option<String>,
}

/// Enroll Now (R9): answered in place to the script, or by a redirect to
/// the chart with the answer as a notice.
pub(crate) async fn enroll_now(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<i64>,
    headers: HeaderMap,
    Form(form): Form<EnrollForm>,
) -> Response {
    let csrf_ok = signed_in
        .check_csrf(&form.csrf)
        .or_else(|_| signed_in.check_csrf_header(&headers));
    if let Err(refused) = csrf_ok {
        return refused.into_response();
    }
    if let Err(response) = scoped_patient(&state, &signed_in, id).await {
        return response;
    }
    let key = match form.action.as_deref() {
        Some("resend") => match state.store.patient_invites(id).await {
            Ok(invites) => invites.last().map(|i| format!("resend-{}", i.id)),
            Err(e) => return internal(e),
        },
        _ => None,
    };
    let answer = match enroll(&state, &signed_in, id, key.as_deref()).await {
        Ok(answer) => answer,
        Err(response) => return response,
    };
    if wants_json(&headers) {
        let status = if answer.result == "sent" {
            StatusCode::OK
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        return (status, Json(answer)).into_response();
    }
    let notice: String = url::form_urlencoded::byte_serialize(answer.message.as_bytes()).collect();
    let update = answer
        .missing
        .first()
        .map(|m| format!("&update={}", m.field))
        .unwrap_or_default();
    Redirect::to(&format!("/patients/{id}?notice={notice}{update}")).into_response()
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"))
}

pub(super) async fn enroll(
    state: &AppState,
    signed_in: &SignedIn,
    id: i64,
    key: Option<&str>,
) -> Result<EnrollAnswer, Response> {
    let now = state.clock.now();
    let outcome = state
        .store
        .enroll_now(
            id,
            key,
            &source(signed_in).audited("patient.enroll_now"),
            now,
        )
        .await
        .map_err(internal)?;
    let (patient, practice) = scoped_patient(state, signed_in, id).await?;
    let status = state
        .store
        .patient_status(&patient, now)
        .await
        .map_err(internal)?;
    let (badge, badge_class) = status.badge();
    let tz = &practice.schedule.tz;
    let mut answer = EnrollAnswer {
        result: "sent",
        message: String::new(),
        missing: Vec::new(),
        next_possible_at: None,
        badge,
        badge_class,
        status_words: status_line(&status, tz),
    };
    match outcome {
        EnrollOutcome::Queued { replayed: true, .. } => {
            answer.message = "This invitation was already sent; it is not sent twice.".into();
        }
        EnrollOutcome::Queued { .. } => {
            answer.message = format!("Invitation on its way to {}.", channels_words(&patient));
        }
        EnrollOutcome::MergedInto {
            surviving_patient_id,
        } => {
            let survivor = state
                .store
                .patient(surviving_patient_id)
                .await
                .map_err(internal)?;
            answer.result = "refused";
            answer.message = merged_words(survivor.as_ref());
        }
        EnrollOutcome::Refused { refusal } => {
            answer.result = "refused";
            answer.message = refusal_words(&refusal, tz);
            if let Refusal::MissingFields { problems } = &refusal {
                answer.missing = problems
                    .iter()
                    .map(|p| MissingField {
                        field: p.field.key(),
                        label: p.field.heading(),
                        message: sentence(&p.message()),
                    })
                    .collect();
            }
            if let Refusal::CapReached { next_possible_at } = refusal {
                answer.next_possible_at = Some(local_time(next_possible_at, tz));
            }
        }
    }
    Ok(answer)
}

/// "email and text message" (what the patient will receive).
fn channels_words(patient: &Patient) -> String {
    let email = patient.demographics.email.is_some() && !patient.email_opted_out;
    let text = patient.demographics.cell_phone.is_some() && !patient.sms_opted_out;
    match (email, text) {
        (true, true) => "the patient's email and cell phone".into(),
        (true, false) => "the patient's email".into(),
        (false, true) => "the patient's cell phone".into(),
        (false, false) => "the patient".into(),
    }
}

pub(super) fn refusal_words(refusal: &Refusal, tz: &jiff::tz::TimeZone) -> String {
    match refusal {
        Refusal::MissingFields { problems } => {
            let labels: Vec<&str> = problems.iter().map(|p| p.field.label()).collect();
            format!(
                "Not sent: first fill in the {} (Update now opens the form there).",
                labels.join(", ")
            )
        }
        Refusal::CapReached { next_possible_at } => format!(
            "Not sent: this patient already had 4 invitations in the last 30 days. The next one can go out on {}.",
            local_time(*next_possible_at, tz)
        ),
        Refusal::AlreadyActive => {
            "Not sent: already active. The patient has activated the portal account.".into()
        }
        other => format!("Not sent: {}.", other.message()),
    }
}

#[derive(Deserialize)]
pub(crate) struct ConfirmForm {
    csrf: String,
}

/// R11: "Confirmed" records who and when.
pub(crate) async fn confirm(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<i64>,
    headers: HeaderMap,
    Form(form): Form<ConfirmForm>,
) -> Response {
    if let Err(refused) = signed_in.check_csrf(&form.csrf) {
        return refused.into_response();
    }
    let (_, practice) = match scoped_patient(&state, &signed_in, id).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let patient = match state
        .store
        .confirm_fields(id, &source(&signed_in), state.clock.now())
        .await
    {
        Ok(patient) => patient,
        Err(e) => return internal(e),
    };
    if wants_json(&headers) {
        let at = patient
            .fields_confirmed_at
            .map(|at| local_time(at, &practice.schedule.tz));
        return Json(json!({ "confirmed_at": at, "confirmed_by": patient.fields_confirmed_by }))
            .into_response();
    }
    Redirect::to(&format!("/patients/{id}?notice=Confirmed")).into_response()
}

#[derive(Deserialize)]
pub(crate) struct ResponseForm {
    csrf: String,
    /// declined | deferred | remove
    response: String,
    /// The remove button asks "are you sure"; the form must say yes.
    confirm_remove: Option<String>,
}

/// Records that the patient declined or deferred, or (explicitly
/// confirmed) removes that response.
pub(crate) async fn response(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<i64>,
    Form(form): Form<ResponseForm>,
) -> Response {
    if let Err(refused) = signed_in.check_csrf(&form.csrf) {
        return refused.into_response();
    }
    if let Err(response) = scoped_patient(&state, &signed_in, id).await {
        return response;
    }
    let response = match form.response.as_str() {
        "remove" if form.confirm_remove.as_deref() == Some("yes") => None,
        "remove" => {
            return Redirect::to(&format!(
                "/patients/{id}?notice=Tick+%E2%80%9CYes%2C+remove+it%E2%80%9D+to+remove+the+patient%E2%80%99s+response."
            ))
            .into_response();
        }
        other => match PatientResponse::from_key(other) {
            Some(r) => Some(r),
            None => {
                return (StatusCode::BAD_REQUEST, "Choose declined or deferred.").into_response();
            }
        },
    };
    match state
        .store
        .set_response(id, response, &source(&signed_in), state.clock.now())
        .await
    {
        Ok(_) => {
            let notice = match response {
                Some(PatientResponse::Declined) => "Recorded%3A+the+patient+declined+the+portal.",
                Some(PatientResponse::Deferred) => "Recorded%3A+the+patient+deferred+the+portal.",
                None => "The+patient%E2%80%99s+response+was+removed.",
            };
            Redirect::to(&format!("/patients/{id}?notice={notice}")).into_response()
        }
        Err(StoreError::Conflict(why)) => (StatusCode::CONFLICT, why).into_response(),
        Err(e) => internal(e),
    }
}

/// The badge now (the script asks after Enroll Now, until the dispatcher
/// has handed the invite over).
pub(crate) async fn status(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<i64>,
) -> Response {
    let (patient, practice) = match scoped_patient(&state, &signed_in, id).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let now = state.clock.now();
    // A look at the patient's status is a view of the patient, audited as
    // any (the script asks a few times after an Enroll Now).
    if let Err(e) = signed_in
        .audit(
            &state,
            signed_in.audit_line("patient.status", AuditTarget::Patient(id)),
        )
        .await
    {
        return internal(e);
    }
    match state.store.patient_status(&patient, now).await {
        Ok(status) => {
            let (badge, badge_class) = status.badge();
            let words = status_line(&status, &practice.schedule.tz);
            Json(json!({ "badge": badge, "badge_class": badge_class, "status_words": words }))
                .into_response()
        }
        Err(e) => internal(e),
    }
}
