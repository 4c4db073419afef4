//! "Invite existing patients" (issue #14 item 2): the go-live page of the
//! Integration Tool. It says how many charts a run would invite and what
//! the others lack, starts a run at a rate per hour, shows its progress
//! while it runs (the page's script asks for it every few seconds; without
//! the script the page shows it when reloaded), pauses, resumes and
//! cancels it, and ends with a summary. The rules are the store's and
//! core's (`Store::release_go_live`, `decide_go_live`).

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use enroll_core::{GoLiveChange, GoLiveRunState, Throttle};
use enroll_store::{GoLiveProgress, GoLiveRun, Practice, StoreError};
use jiff::tz::TimeZone;
use minijinja::context;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::super::session::SignedIn;
use super::super::{internal, local_time, staff_page};
use super::{
    AdminForm, AdminPractice, ReadinessView, ToolQuery, back_to_page, change_audit, csrf_field,
    next_windows_words, practice_for_admin_form,
};
use crate::AppState;

/// The rate the form suggests: a practice of a few thousand charts is
/// invited over a few office days, and the SMTP server never sees a burst.
const DEFAULT_RATE: u32 = 300;

fn page_path(practice_id: i64) -> String {
    format!("/admin/practices/{practice_id}/go-live")
}

/// `GET /admin/practices/{id}/go-live`.
pub(crate) async fn page(
    State(state): State<AppState>,
    AdminPractice(signed_in, practice, Query(q)): AdminPractice<Query<ToolQuery>>,
) -> Response {
    GoLivePage {
        practice: &practice,
        typed_rate: None,
        errors: BTreeMap::new(),
        notice: q.notice.as_deref(),
    }
    .render(&state, &signed_in, StatusCode::OK)
    .await
}

/// `GET /admin/practices/{id}/go-live/progress`: the latest run's numbers
/// as JSON, for the page's script.
pub(crate) async fn progress(
    State(state): State<AppState>,
    AdminPractice(_, practice, ()): AdminPractice,
) -> Response {
    match state.store.go_live_progress(practice.id).await {
        Ok(progress) => {
            let tz = &practice.schedule.tz;
            let view = progress.as_ref().map(|p| ProgressView::of(p, tz));
            let mut response = Json(json!({ "run": view })).into_response();
            response.headers_mut().insert(
                axum::http::header::CACHE_CONTROL,
                axum::http::HeaderValue::from_static("no-store"),
            );
            response
        }
        Err(e) => internal(e),
    }
}

#[derive(Deserialize)]
pub(crate) struct StartForm {
    csrf: String,
    #[serde(default)]
    rate_per_hour: String,
    #[serde(default)]
    confirmed: Option<String>,
}

csrf_field!(StartForm);

/// `POST /admin/practices/{id}/go-live`: starts a run.
pub(crate) async fn start(
    State(state): State<AppState>,
    AdminForm(signed_in, practice, Form(form)): AdminForm<Form<StartForm>>,
) -> Response {
    let mut errors = BTreeMap::new();
    let throttle = match parse_rate(&form.rate_per_hour) {
        Ok(throttle) => Some(throttle),
        Err(problem) => {
            errors.insert("rate_per_hour", problem);
            None
        }
    };
    if form.confirmed.as_deref() != Some("yes") {
        errors.insert(
            "confirmed",
            "tick the box to confirm that these patients will be invited".to_string(),
        );
    }
    let refused = |errors| GoLivePage {
        practice: &practice,
        typed_rate: Some(&form.rate_per_hour),
        errors,
        notice: None,
    };
    let Some(throttle) = throttle.filter(|_| errors.is_empty()) else {
        return refused(errors)
            .render(&state, &signed_in, StatusCode::UNPROCESSABLE_ENTITY)
            .await;
    };
    let now = state.clock.now();
    let audit = |run: &GoLiveRun| {
        let after = json!({ "run": run.id, "state": run.state.key(), "rate_per_hour": run.rate_per_hour, "patients": run.total });
        change_audit(
            &signed_in,
            "practice.go_live_started",
            &practice,
            json!(null),
            after,
        )
    };
    let run = match state
        .store
        .start_go_live(practice.id, throttle, &signed_in.user.username, audit, now)
        .await
    {
        Ok(run) => run,
        Err(StoreError::Invalid(problem)) => {
            return refused(BTreeMap::from([("start", problem)]))
                .render(&state, &signed_in, StatusCode::CONFLICT)
                .await;
        }
        Err(e) => return internal(e),
    };
    let notice = format!(
        "Started: {} patient{} will be invited, {} an hour while the Auto Invite Schedule is open.",
        run.total,
        if run.total == 1 { "" } else { "s" },
        run.rate_per_hour
    );
    back_to_page(&page_path(practice.id), &notice)
}

#[derive(Deserialize)]
pub(crate) struct RunForm {
    csrf: String,
    action: String,
}

/// `POST /admin/practices/{id}/go-live/{run}`: pause, resume or cancel.
pub(crate) async fn change(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path((id, run_id)): Path<(i64, i64)>,
    axum::Form(form): axum::Form<RunForm>,
) -> Response {
    let practice = match practice_for_admin_form(&state, &signed_in, id, &form.csrf).await {
        Ok(practice) => practice,
        Err(refused) => return refused,
    };
    // The run must be this practice's latest, so an admin of one practice
    // cannot stop another's run by its number.
    match state.store.go_live_progress(practice.id).await {
        Ok(Some(p)) if p.run.id == run_id => {}
        Ok(_) => {
            return (
                StatusCode::NOT_FOUND,
                "There is no such run for this practice.",
            )
                .into_response();
        }
        Err(e) => return internal(e),
    }
    let Some(change) = GoLiveChange::from_key(&form.action) else {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            "Choose pause, resume or cancel.",
        )
            .into_response();
    };
    let notice = match change {
        GoLiveChange::Pause => {
            "Paused: no more invites go out until you resume. Invites already handed to the outbox still go."
        }
        GoLiveChange::Resume => "Resumed at the same rate.",
        GoLiveChange::Cancel => {
            "Cancelled: the patients still waiting will not be invited by this run."
        }
    };
    let action = format!("practice.go_live_{}", change.key());
    let audit = |before: &GoLiveRun, after: &GoLiveRun| {
        let state_of = |run: &GoLiveRun| json!({ "run": run.id, "state": run.state.key() });
        change_audit(
            &signed_in,
            &action,
            &practice,
            state_of(before),
            state_of(after),
        )
    };
    let changed = state
        .store
        .change_go_live(run_id, change, audit, state.clock.now())
        .await;
    match changed {
        Ok(_) => back_to_page(&page_path(practice.id), notice),
        Err(StoreError::Invalid(problem)) => {
            GoLivePage {
                practice: &practice,
                typed_rate: None,
                errors: BTreeMap::from([("run", problem)]),
                notice: None,
            }
            .render(&state, &signed_in, StatusCode::CONFLICT)
            .await
        }
        Err(e) => internal(e),
    }
}

/// The rate as typed: a whole number of invites an hour, in range.
fn parse_rate(typed: &str) -> Result<Throttle, String> {
    let typed = typed.trim();
    let rate: i64 = typed.parse().map_err(|_| {
        format!("{typed:?} is not a whole number of invites an hour, for example {DEFAULT_RATE}")
    })?;
    Throttle::per_hour(rate).map_err(|e| e.to_string())
}

struct GoLivePage<'a> {
    practice: &'a Practice,
    typed_rate: Option<&'a str>,
    /// "rate_per_hour", "confirmed", "start" or "run" -> the problem in words.
    errors: BTreeMap<&'static str, String>,
    notice: Option<&'a str>,
}

impl GoLivePage<'_> {
    async fn render(self, state: &AppState, signed_in: &SignedIn, status: StatusCode) -> Response {
        let id = self.practice.id;
        let (readiness, candidates, progress) = match tokio::try_join!(
            state.store.readiness(id),
            state.store.go_live_candidates(id),
            state.store.go_live_progress(id),
        ) {
            Ok(all) => all,
            Err(e) => return internal(e),
        };
        let now = state.clock.now();
        let schedule = &self.practice.schedule;
        let tz = &schedule.tz;
        let rate = self
            .typed_rate
            .map(str::to_string)
            .unwrap_or_else(|| DEFAULT_RATE.to_string());
        staff_page(
            status,
            "staff_go_live.html",
            signed_in,
            context! {
                practice => json!({ "id": id, "name": self.practice.name, "code": self.practice.code,
                    "auto_invites_on": self.practice.auto_invites_on }),
                readiness => ReadinessView::from(&readiness),
                candidates,
                run => progress.as_ref().map(|p| ProgressView::of(p, tz)),
                open_now => schedule.is_open(now),
                next_window => next_windows_words(schedule, now).into_iter().next(),
                rate,
                errors => self.errors,
                notice => self.notice,
            },
        )
    }
}

/// A run's numbers and words for the page and its script.
#[derive(Serialize)]
struct ProgressView {
    id: i64,
    state: &'static str,
    /// "Running", "Paused", "Cancelled", "Finished".
    state_words: &'static str,
    open: bool,
    running: bool,
    rate_per_hour: i64,
    started: String,
    started_by: String,
    finished: Option<String>,
    total: i64,
    released: i64,
    percent: i64,
    waiting: i64,
    sending: i64,
    sent: i64,
    suppressed: i64,
    failed: i64,
    skipped: i64,
    cancelled: i64,
    /// "about 3 hours of open schedule" for the charts still waiting.
    remaining: Option<String>,
}

impl ProgressView {
    fn of(p: &GoLiveProgress, tz: &TimeZone) -> ProgressView {
        let run = &p.run;
        let released = p.released();
        let percent = if run.total > 0 {
            (released + p.cancelled) * 100 / run.total
        } else {
            100
        };
        ProgressView {
            id: run.id,
            state: run.state.key(),
            state_words: match run.state {
                GoLiveRunState::Running => "Running",
                GoLiveRunState::Paused => "Paused",
                GoLiveRunState::Cancelled => "Cancelled",
                GoLiveRunState::Finished => "Finished",
            },
            open: run.state.is_open(),
            running: run.state == GoLiveRunState::Running,
            rate_per_hour: run.rate_per_hour,
            started: local_time(run.created_at, tz),
            started_by: run.started_by.clone(),
            finished: run.finished_at.map(|t| local_time(t, tz)),
            total: run.total,
            released,
            percent,
            waiting: p.waiting,
            sending: p.sending,
            sent: p.sent,
            suppressed: p.suppressed,
            failed: p.failed,
            skipped: p.skipped,
            cancelled: p.cancelled,
            remaining: (run.state.is_open() && p.waiting > 0)
                .then(|| remaining_words(p.waiting, run.rate_per_hour)),
        }
    }
}

/// How long the waiting charts take at the rate, in open hours.
fn remaining_words(waiting: i64, rate_per_hour: i64) -> String {
    let rate = rate_per_hour.max(1);
    let minutes = (waiting * 60 + rate - 1) / rate;
    match minutes {
        0..=1 => "about a minute of open schedule".to_string(),
        2..=90 => format!("about {minutes} minutes of open schedule"),
        _ => format!("about {} hours of open schedule", (minutes + 59) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_a_whole_number_in_range_with_the_problem_in_words() {
        assert_eq!(parse_rate(" 300 ").map(Throttle::rate), Ok(300));
        let words = parse_rate("fast").unwrap_err();
        assert!(words.contains("not a whole number"), "{words}");
        let zero = parse_rate("0").unwrap_err();
        assert!(zero.contains("between 1 and 20000"), "{zero}");
    }

    #[test]
    fn the_time_left_is_said_in_open_hours() {
        assert_eq!(remaining_words(1, 300), "about a minute of open schedule");
        assert_eq!(
            remaining_words(100, 300),
            "about 20 minutes of open schedule"
        );
        assert_eq!(remaining_words(1000, 300), "about 4 hours of open schedule");
    }
}
