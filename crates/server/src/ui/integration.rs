//! The Integration Tool, per practice, for administrators: the auto-invite
//! switch with its go-live date (R3), the Auto Invite Schedule with its next
//! send windows (R5), the practice's phone, and the invite templates with a
//! preview (R12, in `integration/templates.rs`). Every change is checked,
//! with the error in words next to its field, and audited with what it was
//! before and after.

mod connections;
mod extract;
mod go_live;
mod roster;
mod schedule_form;
mod templates;

use enroll_store::{Audit, AuditTarget};
use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::Form;
use enroll_core::{E164Phone, Schedule, ValidSchedule, phone_for_people};
use enroll_store::{Channels, Practice, PracticeChange, Readiness, StoreError};
use jiff::Timestamp;
use jiff::civil::Date;
use minijinja::context;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::session::{Refused, SignedIn};
use super::{internal, staff_page};
use crate::AppState;
pub(crate) use connections::{
    map_facility as connections_map_facility, page as connections_page, ping as connections_ping,
    test_email as connections_test_email, test_sms as connections_test_sms,
};
use extract::{AdminForm, AdminPractice, csrf_field};
pub(crate) use go_live::{
    change as go_live_change, page as go_live_page, progress as go_live_progress,
    start as go_live_start,
};
pub(crate) use roster::{
    RosterImports, page as roster_page, progress as roster_progress,
    rejected_csv as roster_rejected_csv, upload as roster_upload,
};
pub(crate) use schedule_form::ScheduleForm;
pub(crate) use templates::{save_templates, templates_page};

/// How many send windows the schedule section lists.
const NEXT_WINDOWS: usize = 5;

/// The practice, when the signed-in user is an administrator who works
/// for it; otherwise the refusal to show (403 for front desk, 404 for a
/// practice that is not theirs or does not exist).
async fn practice_for_admin(
    state: &AppState,
    signed_in: &SignedIn,
    id: i64,
) -> Result<Practice, Response> {
    if !signed_in.user.role.is_admin() {
        return Err(Refused(
            StatusCode::FORBIDDEN,
            "Only an administrator can open the Integration Tool. Ask one of your practice's administrators.",
        )
        .into_response());
    }
    let not_found = || {
        (
            StatusCode::NOT_FOUND,
            "There is no such practice among yours.",
        )
            .into_response()
    };
    if !signed_in.user.scope.allows(id) {
        return Err(not_found());
    }
    match state.store.practice(id).await {
        Ok(Some(practice)) => Ok(practice),
        Ok(None) => Err(not_found()),
        Err(e) => Err(internal(e)),
    }
}

/// [`practice_for_admin`] for a form that changes something: the form must
/// also carry this session's CSRF value.
async fn practice_for_admin_form(
    state: &AppState,
    signed_in: &SignedIn,
    id: i64,
    csrf: &str,
) -> Result<Practice, Response> {
    let practice = practice_for_admin(state, signed_in, id).await?;
    signed_in
        .check_csrf(csrf)
        .map_err(IntoResponse::into_response)?;
    Ok(practice)
}

/// `/admin/practices`: the administrator's practices; with only one, its
/// Integration Tool straight away.
pub(crate) async fn practices(State(state): State<AppState>, signed_in: SignedIn) -> Response {
    if !signed_in.user.role.is_admin() {
        return Refused(
            StatusCode::FORBIDDEN,
            "Only an administrator can open the Integration Tool. Ask one of your practice's administrators.",
        )
        .into_response();
    }
    let mut practices = match state.store.practices().await {
        Ok(practices) => practices,
        Err(e) => return internal(e),
    };
    practices.retain(|p| signed_in.user.scope.allows(p.id));
    if let [only] = practices.as_slice() {
        return Redirect::to(&format!("/admin/practices/{}", only.id)).into_response();
    }
    let practices: Vec<_> = practices
        .iter()
        .map(|p| json!({ "id": p.id, "code": p.code, "name": p.name, "auto_invites_on": p.auto_invites_on }))
        .collect();
    staff_page(
        StatusCode::OK,
        "staff_practices.html",
        &signed_in,
        context! { practices },
    )
}

#[derive(Deserialize)]
pub(crate) struct ToolQuery {
    notice: Option<String>,
}

/// `/admin/practices/{id}`: the Integration Tool.
pub(crate) async fn tool(
    State(state): State<AppState>,
    AdminPractice(signed_in, practice, Query(q)): AdminPractice<Query<ToolQuery>>,
) -> Response {
    let form = ScheduleForm::from_schedule(&practice.schedule.schedule);
    ToolPage {
        practice: &practice,
        schedule_form: &form,
        errors: BTreeMap::new(),
        notice: q.notice.as_deref(),
        typed_phone: None,
    }
    .render(&state, &signed_in, StatusCode::OK)
    .await
}

/// What the tool page shows besides the practice itself: the schedule as
/// typed (the stored one, or a rejected attempt with its errors), the
/// errors by field, a notice after a change.
struct ToolPage<'a> {
    practice: &'a Practice,
    schedule_form: &'a ScheduleForm,
    /// Field name -> the problem in words, shown next to the field.
    errors: BTreeMap<&'static str, String>,
    notice: Option<&'a str>,
    /// The phone as typed, when it was refused.
    typed_phone: Option<&'a str>,
}

impl ToolPage<'_> {
    async fn render(self, state: &AppState, signed_in: &SignedIn, status: StatusCode) -> Response {
        let readiness = match state.store.readiness(self.practice.id).await {
            Ok(readiness) => readiness,
            Err(e) => return internal(e),
        };
        let now = state.clock.now();
        let schedule = &self.practice.schedule;
        let next_windows = next_windows_words(schedule, now);
        let phone = self
            .typed_phone
            .map(str::to_string)
            .or_else(|| self.practice.phone.as_deref().map(phone_for_people))
            .unwrap_or_default();
        staff_page(
            status,
            "staff_practice.html",
            signed_in,
            context! {
                practice => practice_view(self.practice),
                today => schedule.local_date(now).to_string(),
                readiness => ReadinessView::from(&readiness),
                schedule => self.schedule_form.view(),
                time_zones => schedule_form::time_zone_choices(),
                next_windows,
                never_open => schedule.next_open(now).is_none(),
                phone,
                field_ids => field_ids(),
                errors => self.errors,
                notice => self.notice,
            },
        )
    }
}

/// The id of each form field a problem can be filed under, for the links
/// of the problem summary at the top of the page.
fn field_ids() -> BTreeMap<&'static str, String> {
    let mut ids = BTreeMap::from([
        ("go_live_date", "go-live".to_string()),
        ("phone", "phone".to_string()),
        ("time_zone", "time-zone".to_string()),
        ("closed_dates", "closed-dates".to_string()),
        ("channels", "channel-email".to_string()),
    ]);
    for day in schedule_form::day_keys() {
        ids.insert(day, format!("day-{day}"));
    }
    ids
}

fn practice_view(practice: &Practice) -> serde_json::Value {
    json!({
        "id": practice.id,
        "code": practice.code,
        "name": practice.name,
        "auto_invites_on": practice.auto_invites_on,
        "email_on": practice.channels.email,
        "sms_on": practice.channels.sms,
        "go_live_date": practice.go_live_date.map(|d| d.strftime("%B %-d, %Y").to_string()),
        "time_zone": practice.schedule.schedule.time_zone,
    })
}

#[derive(Serialize)]
struct ReadinessView {
    patients: i64,
    ready: i64,
    missing: Vec<MissingView>,
}

#[derive(Serialize)]
struct MissingView {
    label: &'static str,
    count: i64,
}

impl From<&Readiness> for ReadinessView {
    fn from(r: &Readiness) -> ReadinessView {
        ReadinessView {
            patients: r.patients,
            ready: r.ready,
            missing: r
                .missing
                .iter()
                .filter(|(_, count)| *count > 0)
                .map(|(field, count)| MissingView {
                    label: field.label(),
                    count: *count,
                })
                .collect(),
        }
    }
}

/// The next send windows in words, in the practice's time zone:
/// "Monday, November 30: 8:00 AM to 5:00 PM EST", or "Now, until 5:00 PM
/// EST" for one that is open already.
fn next_windows_words(schedule: &ValidSchedule, now: Timestamp) -> Vec<String> {
    schedule
        .next_windows(now, NEXT_WINDOWS)
        .into_iter()
        .map(|(start, end)| window_words(schedule, now, start, end))
        .collect()
}

fn window_words(
    schedule: &ValidSchedule,
    now: Timestamp,
    start: Timestamp,
    end: Timestamp,
) -> String {
    let tz = &schedule.tz;
    let starts = start.to_zoned_datetime(tz.clone());
    let ends = end.to_zoned_datetime(tz.clone());
    let time = |z: &jiff::ZonedDateTime| z.strftime("%-I:%M %p %Z").to_string();
    let midnight = jiff::civil::Time::midnight();
    let to_midnight = ends.time() == midnight && ends.date() > starts.date();
    let until = if to_midnight {
        "midnight".to_string()
    } else {
        time(&ends)
    };
    let day = starts.strftime("%A, %B %-d");
    if start == now {
        format!("Now, until {until}")
    } else if to_midnight && starts.time() == midnight {
        format!("{day}: all day")
    } else {
        format!("{day}: {} to {until}", time(&starts))
    }
}

#[derive(Deserialize)]
pub(crate) struct AutoInvitesForm {
    csrf: String,
    /// "on" or "off"
    switch: String,
    #[serde(default)]
    go_live_date: String,
    /// "yes" once the administrator has read the confirmation.
    #[serde(default)]
    confirmed: Option<String>,
}

csrf_field!(AutoInvitesForm, ChannelsForm, PhoneForm);

/// R3: turning auto invites on asks for confirmation first, saying what it
/// does and does not do; turning them off does not.
pub(crate) async fn auto_invites(
    State(state): State<AppState>,
    AdminForm(signed_in, practice, Form(form)): AdminForm<Form<AutoInvitesForm>>,
) -> Response {
    let today = practice.schedule.local_date(state.clock.now());
    let (on, go_live_date) = match form.switch.as_str() {
        "off" => (false, practice.go_live_date),
        "on" => match go_live(&form.go_live_date, today) {
            Ok(date) => (true, Some(date)),
            Err(problem) => {
                return tool_with_error(
                    &state,
                    &signed_in,
                    &practice,
                    ("go_live_date", problem),
                    None,
                )
                .await;
            }
        },
        _ => return (StatusCode::BAD_REQUEST, "Unknown switch position.").into_response(),
    };
    if on && form.confirmed.as_deref() != Some("yes") {
        return confirm_page(&state, &signed_in, &practice, go_live_date).await;
    }
    let before = json!({ "on": practice.auto_invites_on, "go_live_date": practice.go_live_date });
    let action = if on {
        "practice.auto_invites_on"
    } else {
        "practice.auto_invites_off"
    };
    let audit = |changed: &Practice| {
        let after = json!({ "on": changed.auto_invites_on, "go_live_date": changed.go_live_date });
        change_audit(&signed_in, action, &practice, before, after)
    };
    let change = PracticeChange::AutoInvites {
        on,
        go_live: go_live_date,
    };
    let notice = if on {
        "Auto invites are on: from now on the four triggers invite patients, inside the schedule."
    } else {
        "Auto invites are off: triggers are recorded but invite no one. Enroll Now still works."
    };
    save_change(&state, practice.id, change, audit, notice).await
}

/// The go-live date as typed (blank: today). It cannot be after today:
/// auto invites are switched on at go-live, not before (R3).
fn go_live(typed: &str, today: Date) -> Result<Date, String> {
    let typed = typed.trim();
    if typed.is_empty() {
        return Ok(today);
    }
    let date: Date = typed.parse().map_err(|_| {
        format!("{typed:?} is not a date; write it as YYYY-MM-DD, for example {today}")
    })?;
    if date > today {
        return Err(format!(
            "{date} is after today ({today}): switch auto invites on on the go-live day or later"
        ));
    }
    Ok(date)
}

async fn confirm_page(
    state: &AppState,
    signed_in: &SignedIn,
    practice: &Practice,
    go_live_date: Option<Date>,
) -> Response {
    let readiness = match state.store.readiness(practice.id).await {
        Ok(readiness) => readiness,
        Err(e) => return internal(e),
    };
    staff_page(
        StatusCode::OK,
        "staff_practice_confirm.html",
        signed_in,
        context! {
            practice => practice_view(practice),
            go_live_date => go_live_date.map(|d| d.to_string()),
            go_live_words => go_live_date.map(|d| d.strftime("%B %-d, %Y").to_string()),
            readiness => ReadinessView::from(&readiness),
        },
    )
}

/// Saves the Auto Invite Schedule typed in the editor; a problem is shown
/// next to the day, the time zone or the closed dates it concerns.
pub(crate) async fn schedule(
    State(state): State<AppState>,
    AdminForm(signed_in, practice, Form(form)): AdminForm<Form<ScheduleForm>>,
) -> Response {
    let schedule = match form.to_schedule() {
        Ok(schedule) => schedule,
        Err(errors) => {
            return ToolPage {
                practice: &practice,
                schedule_form: &form,
                errors,
                notice: None,
                typed_phone: None,
            }
            .render(&state, &signed_in, StatusCode::UNPROCESSABLE_ENTITY)
            .await;
        }
    };
    let before = schedule_json(&practice.schedule.schedule);
    let audit = |changed: &Practice| {
        let after = schedule_json(&changed.schedule.schedule);
        change_audit(&signed_in, "practice.schedule", &practice, before, after)
    };
    let change = PracticeChange::Schedule(&schedule);
    save_change(
        &state,
        practice.id,
        change,
        audit,
        "The Auto Invite Schedule is saved.",
    )
    .await
}

fn schedule_json(schedule: &Schedule) -> serde_json::Value {
    serde_json::to_value(schedule).unwrap_or(serde_json::Value::Null)
}

#[derive(Deserialize)]
pub(crate) struct ChannelsForm {
    csrf: String,
    /// A ticked box sends "on"; an unticked one sends nothing.
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    sms: Option<String>,
}

/// The channel switches: email and text messages; not both off.
pub(crate) async fn channels(
    State(state): State<AppState>,
    AdminForm(signed_in, practice, Form(form)): AdminForm<Form<ChannelsForm>>,
) -> Response {
    let wanted = Channels {
        email: form.email.is_some(),
        sms: form.sms.is_some(),
    };
    let audit = |changed: &Practice| {
        let (before, after) = (json!(practice.channels), json!(changed.channels));
        change_audit(&signed_in, "practice.channels", &practice, before, after)
    };
    let change = PracticeChange::Channels(wanted);
    let now = state.clock.now();
    match state
        .store
        .change_practice(practice.id, change, audit, now)
        .await
    {
        Ok(_) => {}
        Err(StoreError::Invalid(why)) => {
            let problem = format!("Channels: {why}.");
            return tool_with_error(&state, &signed_in, &practice, ("channels", problem), None)
                .await;
        }
        Err(e) => return internal(e),
    }
    back_to_tool(
        practice.id,
        "The channels are saved; invites from now on use them.",
    )
}

#[derive(Deserialize)]
pub(crate) struct PhoneForm {
    csrf: String,
    phone: String,
}

/// The number patients are told to call when their link no longer works.
pub(crate) async fn phone(
    State(state): State<AppState>,
    AdminForm(signed_in, practice, Form(form)): AdminForm<Form<PhoneForm>>,
) -> Response {
    let typed = form.phone.trim();
    let phone = if typed.is_empty() {
        None
    } else {
        match E164Phone::parse(typed) {
            Ok(phone) => Some(phone),
            Err(_) => {
                let problem = format!(
                    "{typed:?} is not a phone number; write it with its area code, for example (617) 555-0100"
                );
                return tool_with_error(
                    &state,
                    &signed_in,
                    &practice,
                    ("phone", problem),
                    Some(typed),
                )
                .await;
            }
        }
    };
    let audit = |changed: &Practice| {
        let (before, after) = (json!(practice.phone), json!(changed.phone));
        change_audit(&signed_in, "practice.phone", &practice, before, after)
    };
    let change = PracticeChange::Phone(phone.as_ref());
    save_change(
        &state,
        practice.id,
        change,
        audit,
        "The practice's phone is saved.",
    )
    .await
}

/// Saves one change of the practice's settings with its audit line, then
/// shows the tool again with `notice`.
async fn save_change(
    state: &AppState,
    practice_id: i64,
    change: PracticeChange<'_>,
    audit: impl FnOnce(&Practice) -> Audit + Send,
    notice: &str,
) -> Response {
    let now = state.clock.now();
    if let Err(e) = state
        .store
        .change_practice(practice_id, change, audit, now)
        .await
    {
        return internal(e);
    }
    back_to_tool(practice_id, notice)
}

/// The tool again with one problem next to its field (and the phone as
/// typed, when that was the problem).
async fn tool_with_error(
    state: &AppState,
    signed_in: &SignedIn,
    practice: &Practice,
    (field, problem): (&'static str, String),
    typed_phone: Option<&str>,
) -> Response {
    let form = ScheduleForm::from_schedule(&practice.schedule.schedule);
    ToolPage {
        practice,
        schedule_form: &form,
        errors: BTreeMap::from([(field, problem)]),
        notice: None,
        typed_phone,
    }
    .render(state, signed_in, StatusCode::UNPROCESSABLE_ENTITY)
    .await
}

/// After a change, the tool again (a GET, so a reload does not post twice).
fn back_to_tool(id: i64, notice: &str) -> Response {
    back_to_page(&format!("/admin/practices/{id}"), notice)
}

/// A redirect to `path` (which may have a query already) with a notice.
fn back_to_page(path: &str, notice: &str) -> Response {
    let notice: String = url::form_urlencoded::byte_serialize(notice.as_bytes()).collect();
    let join = if path.contains('?') { '&' } else { '?' };
    Redirect::to(&format!("{path}{join}notice={notice}")).into_response()
}

/// One audit line per change: the practice, and the setting before and
/// after, so the log says what was changed, not only that it was.
fn change_audit(
    signed_in: &SignedIn,
    action: &str,
    practice: &Practice,
    before: serde_json::Value,
    after: serde_json::Value,
) -> Audit {
    let detail = json!({ "practice": practice.code, "before": before, "after": after });
    Audit::new(
        &signed_in.user.username,
        action,
        AuditTarget::Practice(practice.id),
    )
    .with_detail(detail.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    #[test]
    fn the_go_live_date_is_today_when_blank_and_never_after_today() {
        let today = date(2026, 12, 1);
        assert_eq!(go_live("", today), Ok(today));
        assert_eq!(go_live(" 2026-11-30 ", today), Ok(date(2026, 11, 30)));
        let later = go_live("2026-12-02", today).unwrap_err();
        assert!(later.contains("after today (2026-12-01)"), "{later}");
        let typo = go_live("12/01/2026", today).unwrap_err();
        assert!(typo.contains("YYYY-MM-DD"), "{typo}");
    }

    #[test]
    fn windows_are_said_in_the_practices_time_zone() {
        let schedule = Schedule::office_hours("America/New_York")
            .validate()
            .unwrap();
        let monday_morning: Timestamp = "2026-11-30T12:00:00Z".parse().unwrap();
        let words = next_windows_words(&schedule, monday_morning);
        assert_eq!(
            words,
            [
                "Monday, November 30: 8:00 AM EST to 5:00 PM EST",
                "Tuesday, December 1: 8:00 AM EST to 5:00 PM EST",
                "Wednesday, December 2: 8:00 AM EST to 5:00 PM EST",
                "Thursday, December 3: 8:00 AM EST to 5:00 PM EST",
                "Friday, December 4: 8:00 AM EST to 5:00 PM EST",
            ]
        );
        let always = enroll_core::Schedule {
            windows: vec![enroll_core::Window {
                weekday: jiff::civil::Weekday::Tuesday,
                opens: jiff::civil::Time::midnight(),
                closes: jiff::civil::Time::midnight(),
            }],
            ..Schedule::office_hours("America/New_York")
        }
        .validate()
        .unwrap();
        assert_eq!(
            next_windows_words(&always, monday_morning)[0],
            "Tuesday, December 1: all day"
        );
        let open_now: Timestamp = "2026-11-30T15:30:00Z".parse().unwrap();
        assert_eq!(
            next_windows_words(&schedule, open_now)[0],
            "Now, until 5:00 PM EST"
        );
    }
}
