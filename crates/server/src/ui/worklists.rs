//! Work lists for the front desk and administrators: patients missing
//! required fields (with which), failed deliveries (with the reason),
//! suppressed by the cap (with the next possible date), invited but not
//! active after N days (to call them), opted out. A page of 50 in name
//! order, or the whole list as CSV; every view and export is audited with
//! the patients it showed.

use enroll_store::AuditTarget;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use enroll_core::{Field, check};
use enroll_store::{Practice, WorkList, WorkListEntry, WorkListQuery};
use jiff::SignedDuration;
use minijinja::context;
use serde::{Deserialize, Serialize};

use super::search::display_name;
use super::session::SignedIn;
use super::{csv_download, internal, local_time, practices_by_id, staff_page};
use crate::AppState;

const PAGE: i64 = 50;
/// The most rows one CSV export holds.
const CSV_MAX: i64 = 10_000;

/// The lists, in the tabs' order: (key, tab label).
const LISTS: [(&str, &str); 5] = [
    ("missing", "Missing fields"),
    ("failed", "Failed deliveries"),
    ("suppressed", "Held by the cap"),
    ("not-active", "Invited, not active"),
    ("opted-out", "Opted out"),
];

#[derive(Deserialize)]
pub(crate) struct WorkListParams {
    #[serde(default)]
    list: Option<String>,
    /// For "not-active": invited at least this many days ago.
    #[serde(default)]
    days: Option<i64>,
    #[serde(default)]
    page: Option<i64>,
    /// After an edit-and-resend: what happened, in words.
    #[serde(default)]
    notice: Option<String>,
    /// After a refused edit: the patient whose row shows `error`.
    #[serde(default)]
    patient: Option<i64>,
    #[serde(default)]
    error: Option<String>,
}

impl WorkListParams {
    fn key(&self) -> &str {
        self.list.as_deref().unwrap_or("missing")
    }

    fn days(&self) -> i64 {
        self.days.unwrap_or(7).clamp(1, 365)
    }

    fn list(&self) -> Option<WorkList> {
        Some(match self.key() {
            "missing" => WorkList::MissingFields,
            "failed" => WorkList::FailedDeliveries,
            "suppressed" => WorkList::Suppressed,
            "not-active" => WorkList::NotActiveAfter(SignedDuration::from_hours(24 * self.days())),
            "opted-out" => WorkList::OptedOut,
            _ => return None,
        })
    }
}

#[derive(Serialize)]
struct Row {
    id: i64,
    name: String,
    mrn: String,
    dob: String,
    practice: String,
    /// What the list is about for this patient, in words.
    detail: String,
    /// The failed list's edit-and-resend fields, as on the chart.
    email: String,
    cell_phone: String,
}

/// The words of the list's own column for one patient.
fn detail(
    list: WorkList,
    entry: &WorkListEntry,
    practice: &Practice,
    now: jiff::Timestamp,
) -> String {
    let tz = &practice.schedule.tz;
    let invite = entry.latest_invite.as_ref();
    match list {
        WorkList::MissingFields => {
            let today = practice.schedule.local_date(now);
            let problems = check(&entry.patient.demographics, today).problems;
            let missing: Vec<&str> = Field::REQUIRED
                .into_iter()
                .filter(|field| problems.iter().any(|p| p.field == *field))
                .map(Field::label)
                .collect();
            missing.join(", ")
        }
        WorkList::FailedDeliveries => invite
            .and_then(|i| i.failure_reason.clone())
            .unwrap_or_else(|| "no reason was recorded".into()),
        WorkList::Suppressed => match invite.and_then(|i| i.next_possible_at) {
            Some(at) => format!("can be sent from {}", local_time(at, tz)),
            None => "held by the cap of 4 invitations in 30 days".into(),
        },
        WorkList::NotActiveAfter(_) => match invite.and_then(|i| i.sent_at) {
            Some(at) => format!("last invited {}", local_time(at, tz)),
            None => "invited".into(),
        },
        WorkList::OptedOut => {
            let p = &entry.patient;
            match (p.email_opted_out, p.sms_opted_out) {
                (true, true) => "email and text messages",
                (true, false) => "email",
                _ => "text messages",
            }
            .into()
        }
    }
}

async fn rows_of(
    state: &AppState,
    list: WorkList,
    entries: &[WorkListEntry],
) -> Result<Vec<Row>, enroll_store::StoreError> {
    let practices = practices_by_id(state).await?;
    let now = state.clock.now();
    Ok(entries
        .iter()
        .filter_map(|entry| {
            let practice = practices.get(&entry.patient.practice_id)?;
            Some(Row {
                id: entry.patient.id,
                name: display_name(&entry.patient),
                mrn: entry.patient.mrn.clone(),
                dob: entry
                    .patient
                    .demographics
                    .date_of_birth
                    .clone()
                    .unwrap_or_default(),
                practice: practice.name.clone(),
                detail: detail(list, entry, practice, now),
                email: entry.patient.demographics.email.clone().unwrap_or_default(),
                cell_phone: entry
                    .patient
                    .demographics
                    .cell_phone
                    .clone()
                    .unwrap_or_default(),
            })
        })
        .collect())
}

/// The audit line of a view or an export: the list and the patients shown.
async fn audit(
    state: &AppState,
    signed_in: &SignedIn,
    action: &str,
    key: &str,
    rows: &[Row],
) -> enroll_store::Result<()> {
    let ids: Vec<String> = rows.iter().map(|r| r.id.to_string()).collect();
    let detail = serde_json::json!({ "list": key, "ids": ids.join(",") }).to_string();
    let line = signed_in.audit_line(action, AuditTarget::None);
    signed_in.audit(state, line.with_detail(detail)).await
}

/// `/worklists?list=missing&page=2`
pub(crate) async fn page(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Query(params): Query<WorkListParams>,
) -> Response {
    let Some(list) = params.list() else {
        return (
            StatusCode::NOT_FOUND,
            "There is no such work list: choose one of the tabs.",
        )
            .into_response();
    };
    let page = params.page.unwrap_or(1).max(1);
    let query = WorkListQuery {
        list,
        scope: signed_in.user.scope.clone(),
        limit: PAGE,
        offset: (page - 1).saturating_mul(PAGE),
        now: state.clock.now(),
    };
    let found = match state.store.work_list(&query).await {
        Ok(found) => found,
        Err(e) => return internal(e),
    };
    let rows = match rows_of(&state, list, &found.entries).await {
        Ok(rows) => rows,
        Err(e) => return internal(e),
    };
    if let Err(e) = audit(&state, &signed_in, "worklist.view", params.key(), &rows).await {
        return internal(e);
    }
    let pages = (found.total + PAGE - 1) / PAGE;
    let tabs: Vec<_> = LISTS
        .iter()
        .map(|(key, label)| serde_json::json!({ "key": key, "label": label }))
        .collect();
    staff_page(
        StatusCode::OK,
        "staff_worklists.html",
        &signed_in,
        context! {
            tabs,
            key => params.key(),
            label => LISTS.iter().find(|(k, _)| *k == params.key()).map(|(_, l)| *l),
            days => params.days(),
            rows,
            total => found.total,
            page,
            pages,
            detail_heading => detail_heading(list),
            notice => params.notice,
            error_patient => params.patient,
            error => params.error,
        },
    )
}

fn detail_heading(list: WorkList) -> &'static str {
    match list {
        WorkList::MissingFields => "Missing",
        WorkList::FailedDeliveries => "Why it failed",
        WorkList::Suppressed => "Next possible send",
        WorkList::NotActiveAfter(_) => "Invited",
        WorkList::OptedOut => "Opted out of",
    }
}

/// `/worklists.csv?list=...`: the whole list (up to 10,000 patients).
pub(crate) async fn csv(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Query(params): Query<WorkListParams>,
) -> Response {
    let Some(list) = params.list() else {
        return (StatusCode::NOT_FOUND, "There is no such work list.").into_response();
    };
    let query = WorkListQuery {
        list,
        scope: signed_in.user.scope.clone(),
        limit: CSV_MAX,
        offset: 0,
        now: state.clock.now(),
    };
    let rows = match state.store.work_list(&query).await {
        Ok(found) => rows_of(&state, list, &found.entries).await,
        Err(e) => Err(e),
    };
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => return internal(e),
    };
    if let Err(e) = audit(&state, &signed_in, "worklist.export", params.key(), &rows).await {
        return internal(e);
    }
    let body = match csv_text(&rows, detail_heading(list)) {
        Ok(body) => body,
        Err(e) => return internal(e),
    };
    csv_download(&format!("enroll-{}.csv", params.key()), body)
}

fn csv_text(rows: &[Row], detail_heading: &str) -> Result<String, csv::Error> {
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record([
        "Patient",
        "MRN",
        "Date of birth",
        "Practice",
        detail_heading,
    ])?;
    for row in rows {
        // A spreadsheet runs a cell that starts with = + - @ as a formula;
        // a leading apostrophe keeps names and reasons text.
        let cells = [&row.name, &row.mrn, &row.dob, &row.practice, &row.detail].map(|c| defused(c));
        out.write_record(cells)?;
    }
    let bytes = out.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

pub(crate) fn defused(cell: &str) -> String {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{cell}"),
        _ => cell.to_string(),
    }
}

#[derive(Deserialize)]
pub(crate) struct ResendForm {
    csrf: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    cell_phone: String,
}

/// `POST /worklists/failed/{id}`: the failed list's edit-and-resend in
/// place. The email and cell phone are saved as on the chart (audited, a
/// change to the email is R2's required-field trigger), then the invite
/// is sent again with Enroll Now (R9), unless the trigger already queued
/// one; the answer comes back to the list as a notice.
pub(crate) async fn resend(
    State(state): State<AppState>,
    signed_in: SignedIn,
    axum::extract::Path(id): axum::extract::Path<i64>,
    axum::Form(form): axum::Form<ResendForm>,
) -> Response {
    if let Err(refused) = signed_in.check_csrf(&form.csrf) {
        return refused.into_response();
    }
    let (patient, _) = match super::chart::scoped_patient(&state, &signed_in, id).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let back = "/worklists?list=failed";
    if let Err(problem) = enroll_core::EmailAddress::parse(&form.email) {
        let words = match problem {
            enroll_core::Problem::Missing => "type the email address to send the invite to".into(),
            enroll_core::Problem::Invalid(words) => format!("this email address {words}"),
        };
        return redirect_with(back, &[("patient", &id.to_string()), ("error", &words)]);
    }
    let demographics = enroll_core::Demographics {
        email: Some(form.email.clone()),
        cell_phone: Some(form.cell_phone.clone()),
        ..patient.demographics.clone()
    }
    .normalized();
    let now = state.clock.now();
    let source = super::chart::source(&signed_in).audited("patient.update");
    let saved = match state
        .store
        .update_patient(id, &demographics, &source, now)
        .await
    {
        Ok(saved) => saved,
        Err(e) => return internal(e),
    };
    let name = display_name(&saved.patient);
    let notice = if super::chart::queued_by_trigger(&saved) {
        format!("{name}: {}", super::chart::AUTO_INVITE_QUEUED)
    } else {
        match super::chart::enroll(&state, &signed_in, id, None).await {
            Ok(answer) => format!("{name}: saved. {}", answer.message),
            Err(response) => return response,
        }
    };
    redirect_with(back, &[("notice", &notice)])
}

fn redirect_with(path: &str, pairs: &[(&str, &str)]) -> Response {
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    axum::response::Redirect::to(&format!("{path}&{query}")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cell_a_spreadsheet_would_run_as_a_formula_is_kept_as_text() {
        assert_eq!(defused("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(defused("-1"), "'-1");
        assert_eq!(defused("Smith, Ann"), "Smith, Ann");
        let rows = [Row {
            id: 1,
            name: "Smith, Ann".into(),
            mrn: "=1+1".into(),
            dob: "1990-07-04".into(),
            practice: "North".into(),
            detail: "email address".into(),
            email: "ann@example.org".into(),
            cell_phone: String::new(),
        }];
        let text = csv_text(&rows, "Missing").unwrap();
        assert_eq!(
            text,
            "Patient,MRN,Date of birth,Practice,Missing\n\"Smith, Ann\",'=1+1,1990-07-04,North,email address\n"
        );
    }
}
