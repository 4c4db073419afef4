//! The enrollment dashboard (`/dashboard`, every staff user, within their
//! practices): the counts, the activation rate and the median time to
//! activation, invites sent and activations per day over the last 90 days
//! as server-drawn SVG charts with their numbers in a table, and the CMS
//! "Provide Patients Electronic Access" measure for a chosen period with
//! the patients behind each number as CSV (`/dashboard/cms.csv`). Views
//! and exports are audited (`dashboard.view`, `dashboard.export`).

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use enroll_core::MeasureOutcome;
use enroll_store::AuditTarget;
use enroll_store::{
    DashboardCounts, DayCount, MeasureCounts, MeasuredPatient, Practice, StoreError,
};
use jiff::civil::Date;
use jiff::{SignedDuration, ToSpan};
use minijinja::context;
use serde::{Deserialize, Serialize};

use super::search::display_name;
use super::session::SignedIn;
use super::worklists::defused;
use super::{csv_download, internal, staff_page};
use crate::AppState;

/// The longest period the measure is computed for (CMS asks for 90 days
/// up to a year).
const PERIOD_MAX_DAYS: i64 = 366;
/// The default period: the 90 days ending today.
const PERIOD_DEFAULT_DAYS: i64 = 90;
/// The most patients one CSV holds.
const CSV_MAX: usize = 100_000;

#[derive(Deserialize)]
pub(crate) struct DashboardParams {
    #[serde(default)]
    practice: Option<String>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
    /// For the CSV: `numerator` or `denominator`.
    #[serde(default)]
    set: Option<String>,
}

/// The practices a request is about, and the period.
struct Selection {
    /// Every practice in the user's scope, for the picker.
    choices: Vec<Practice>,
    /// The ones counted: one, or every practice in scope.
    practices: Vec<Practice>,
    /// The chosen practice's code, when one is chosen.
    code: Option<String>,
    from: Date,
    to: Date,
}

impl Selection {
    /// Ids for the store; `None` for an administrator of the whole
    /// enterprise looking at all of it.
    fn ids(&self, signed_in: &SignedIn) -> Option<Vec<i64>> {
        if self.code.is_none() && signed_in.user.scope.ids().is_none() {
            None
        } else {
            Some(self.practices.iter().map(|p| p.id).collect())
        }
    }

    /// The zone the charts' days are in: the chosen practice's, else the
    /// first practice's.
    fn time_zone(&self) -> jiff::tz::TimeZone {
        self.practices
            .first()
            .map(|p| p.schedule.tz.clone())
            .unwrap_or(jiff::tz::TimeZone::UTC)
    }

    fn describe(&self) -> String {
        match (&self.code, self.practices.as_slice()) {
            (Some(_), [one]) => one.name.clone(),
            _ => "All your practices".into(),
        }
    }
}

/// A refusal in words.
fn refused(status: StatusCode, words: &str) -> Response {
    (status, words.to_string()).into_response()
}

async fn select(
    state: &AppState,
    signed_in: &SignedIn,
    params: &DashboardParams,
) -> Result<Selection, Response> {
    let all = state.store.practices().await.map_err(internal)?;
    let choices: Vec<Practice> = all
        .into_iter()
        .filter(|p| signed_in.user.scope.allows(p.id))
        .collect();
    let code = params.practice.clone().filter(|c| !c.trim().is_empty());
    let practices: Vec<Practice> = match &code {
        None => choices.clone(),
        Some(code) => match choices.iter().find(|p| &p.code == code) {
            Some(p) => vec![p.clone()],
            None => {
                return Err(refused(
                    StatusCode::NOT_FOUND,
                    "There is no such practice among your practices.",
                ));
            }
        },
    };
    let today = practices
        .first()
        .map(|p| p.schedule.local_date(state.clock.now()))
        .unwrap_or_else(|| {
            jiff::tz::TimeZone::UTC
                .to_datetime(state.clock.now())
                .date()
        });
    let (from, to) =
        period(params, today).map_err(|words| refused(StatusCode::BAD_REQUEST, words))?;
    Ok(Selection {
        choices,
        practices,
        code,
        from,
        to,
    })
}

/// The period from the form, or the 90 days ending today; else what is
/// wrong with it, in words.
fn period(params: &DashboardParams, today: Date) -> Result<(Date, Date), &'static str> {
    let read = |raw: &Option<String>, default: Date| match raw.as_deref().map(str::trim) {
        None | Some("") => Ok(default),
        Some(text) => text
            .parse::<Date>()
            .map_err(|_| "Write the period's dates as year-month-day, for example 2026-10-01."),
    };
    let to = read(&params.to, today)?;
    let default_from = to
        .checked_sub((PERIOD_DEFAULT_DAYS - 1).days())
        .unwrap_or(to);
    let from = read(&params.from, default_from)?;
    if from > to {
        return Err("The period must start on or before the day it ends.");
    }
    if (to - from).get_days() >= i32::try_from(PERIOD_MAX_DAYS).unwrap_or(i32::MAX) {
        return Err("The period can be at most a year (366 days).");
    }
    Ok((from, to))
}

/// The measure over every selected practice.
async fn measure(
    state: &AppState,
    selection: &Selection,
) -> Result<Vec<MeasuredPatient>, StoreError> {
    let mut all = Vec::new();
    for practice in &selection.practices {
        all.extend(
            state
                .store
                .cms_measure(practice, selection.from, selection.to)
                .await?,
        );
    }
    Ok(all)
}

#[derive(Serialize)]
struct Tile {
    label: &'static str,
    value: String,
    /// A work list that shows these patients.
    href: Option<&'static str>,
    note: Option<String>,
}

fn tiles(counts: &DashboardCounts) -> Vec<Tile> {
    let tile = |label, value: i64, href| Tile {
        label,
        value: thousands(value),
        href,
        note: None,
    };
    vec![
        tile("Patients", counts.patients, None),
        tile("Eligible", counts.eligible, None),
        tile("Invited", counts.invited, None),
        tile("Activated", counts.activated, None),
        tile(
            "Missing fields",
            counts.missing_fields,
            Some("/worklists?list=missing"),
        ),
        tile(
            "Held by the cap",
            counts.suppressed,
            Some("/worklists?list=suppressed"),
        ),
        tile(
            "Opted out",
            counts.opted_out,
            Some("/worklists?list=opted-out"),
        ),
        tile(
            "Failed deliveries",
            counts.failed_deliveries,
            Some("/worklists?list=failed"),
        ),
        Tile {
            label: "Activation rate",
            value: percent(counts.activated, counts.invited),
            href: None,
            note: Some("of the patients invited".into()),
        },
        Tile {
            label: "Median time to activate",
            value: counts
                .median_to_activation
                .map(duration_words)
                .unwrap_or_else(|| "no activations yet".into()),
            href: None,
            note: Some("first invite to activation, activated in the last 90 days".into()),
        },
    ]
}

/// 1234567 -> "1,234,567".
fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// "42.9%", or "no one invited yet".
fn percent(part: i64, whole: i64) -> String {
    if whole <= 0 {
        return "no one invited yet".into();
    }
    let tenths = (part.saturating_mul(1000) + whole / 2) / whole;
    format!("{}.{}%", tenths / 10, tenths % 10)
}

/// "3 days 4 hours", "5 hours 12 minutes", "40 minutes".
fn duration_words(d: SignedDuration) -> String {
    let minutes = d.as_secs().max(0) / 60;
    let (days, hours, mins) = (minutes / 1440, minutes / 60 % 24, minutes % 60);
    let unit = |n: i64, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    if days > 0 {
        format!("{} {}", unit(days, "day"), unit(hours, "hour"))
    } else if hours > 0 {
        format!("{} {}", unit(hours, "hour"), unit(mins, "minute"))
    } else {
        unit(mins, "minute")
    }
}

/// One bar chart drawn on the server: a 600 x 200 view box, one bar a day.
#[derive(Serialize)]
struct Chart {
    id: &'static str,
    title: String,
    desc: String,
    max: i64,
    total: i64,
    bars: Vec<Bar>,
    /// Date labels under the axis (every 30 days).
    ticks: Vec<Tick>,
}

#[derive(Serialize)]
struct Bar {
    x: i64,
    y: i64,
    height: i64,
    label: String,
}

#[derive(Serialize)]
struct Tick {
    x: i64,
    label: String,
}

const CHART_LEFT: i64 = 40;
const CHART_BOTTOM: i64 = 170;
const CHART_HEIGHT: i64 = 150;
const BAR_STEP: i64 = 6;

fn chart(id: &'static str, what: &str, days: &[DayCount], value: fn(&DayCount) -> i64) -> Chart {
    let max = days.iter().map(value).max().unwrap_or(0);
    let total: i64 = days.iter().map(value).sum();
    let bars = days
        .iter()
        .enumerate()
        .map(|(i, day)| {
            let n = value(day);
            let height = if max > 0 { n * CHART_HEIGHT / max } else { 0 };
            Bar {
                x: CHART_LEFT + i64::try_from(i).unwrap_or(0) * BAR_STEP,
                y: CHART_BOTTOM - height,
                height,
                label: format!("{}: {n} {what}", day.date.strftime("%b %-d")),
            }
        })
        .collect();
    let ticks = days
        .iter()
        .enumerate()
        .step_by(30)
        .map(|(i, day)| Tick {
            x: CHART_LEFT + i64::try_from(i).unwrap_or(0) * BAR_STEP,
            label: day.date.strftime("%b %-d").to_string(),
        })
        .collect();
    let (first, last) = (days.first(), days.last());
    let span = match (first, last) {
        (Some(f), Some(l)) => format!("{} to {}", f.date, l.date),
        _ => String::new(),
    };
    Chart {
        id,
        title: format!("{} per day, last {} days", capitalized(what), days.len()),
        desc: format!(
            "{total} {what} from {span}; the busiest day had {max}. The table below lists every day."
        ),
        max,
        total,
        bars,
        ticks,
    }
}

fn capitalized(words: &str) -> String {
    let mut chars = words.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[derive(Serialize)]
struct DayRow {
    date: String,
    invites_sent: i64,
    activations: i64,
}

#[derive(Serialize)]
struct Measure {
    denominator: i64,
    numerator: i64,
    rate: String,
    from: String,
    to: String,
}

fn measure_summary(counts: MeasureCounts, selection: &Selection) -> Measure {
    let (d, n) = (counts.denominator, counts.numerator);
    Measure {
        denominator: d,
        numerator: n,
        rate: if d > 0 {
            percent(n, d)
        } else {
            "no visits in the period".into()
        },
        from: selection.from.to_string(),
        to: selection.to.to_string(),
    }
}

/// `/dashboard?practice=CODE&from=2026-09-01&to=2026-11-30`
pub(crate) async fn page(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Query(params): Query<DashboardParams>,
) -> Response {
    let selection = match select(&state, &signed_in, &params).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    match render_page(&state, &signed_in, &selection).await {
        Ok(response) => response,
        Err(e) => internal(e),
    }
}

async fn render_page(
    state: &AppState,
    signed_in: &SignedIn,
    selection: &Selection,
) -> Result<Response, StoreError> {
    let now = state.clock.now();
    let ids = selection.ids(signed_in);
    let counts = state.store.dashboard_counts(ids.as_deref(), now).await?;
    let days = state
        .store
        .dashboard_days(ids.as_deref(), &selection.time_zone(), now)
        .await?;
    // From the measure's rollup; the CSV below computes the same patients
    // afresh with the reasons (the tests hold the two equal).
    let practice_ids: Vec<i64> = selection.practices.iter().map(|p| p.id).collect();
    let measured = state
        .store
        .measure_counts(&practice_ids, selection.from, selection.to)
        .await?;
    let detail = serde_json::json!({
        "practice": selection.code,
        "from": selection.from.to_string(),
        "to": selection.to.to_string(),
    });
    let line = signed_in.audit_line("dashboard.view", AuditTarget::None);
    signed_in
        .audit(state, line.with_detail(detail.to_string()))
        .await?;
    let charts = [
        chart("invites-chart", "invites sent", &days, |d| d.invites_sent),
        chart("activations-chart", "activations", &days, |d| d.activations),
    ];
    let day_rows: Vec<DayRow> = days
        .iter()
        .rev()
        .map(|d| DayRow {
            date: d.date.strftime("%a %b %-d, %Y").to_string(),
            invites_sent: d.invites_sent,
            activations: d.activations,
        })
        .collect();
    let choices: Vec<_> = selection
        .choices
        .iter()
        .map(|p| serde_json::json!({ "code": p.code, "name": p.name }))
        .collect();
    let period_still_open = selection.practices.iter().any(|p| {
        enroll_core::access_deadline(selection.to, &p.schedule.schedule.closed_dates)
            >= p.schedule.local_date(now)
    });
    Ok(staff_page(
        StatusCode::OK,
        "staff_dashboard.html",
        signed_in,
        context! {
            scope_name => selection.describe(),
            code => selection.code.clone().unwrap_or_default(),
            choices,
            tiles => tiles(&counts),
            charts,
            day_rows,
            zone => selection.time_zone().iana_name().unwrap_or("UTC").to_string(),
            measure => measure_summary(measured, selection),
            period_still_open,
        },
    ))
}

/// `/dashboard/cms.csv?practice=&from=&to=&set=numerator|denominator`:
/// the patients behind one number of the measure.
pub(crate) async fn cms_csv(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Query(params): Query<DashboardParams>,
) -> Response {
    let numerator = match params.set.as_deref() {
        Some("numerator") => true,
        Some("denominator") | None => false,
        Some(_) => {
            return refused(
                StatusCode::NOT_FOUND,
                "Choose the numerator or the denominator.",
            );
        }
    };
    let selection = match select(&state, &signed_in, &params).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    match csv_response(&state, &signed_in, &selection, numerator).await {
        Ok(response) => response,
        Err(e) => internal(e),
    }
}

async fn csv_response(
    state: &AppState,
    signed_in: &SignedIn,
    selection: &Selection,
    numerator: bool,
) -> Result<Response, Box<dyn std::error::Error + Send + Sync>> {
    let measured: Vec<MeasuredPatient> = measure(state, selection)
        .await?
        .into_iter()
        .filter(|m| !numerator || m.outcome.in_numerator())
        .take(CSV_MAX)
        .collect();
    let ids: Vec<i64> = measured.iter().map(|m| m.patient_id).collect();
    let by_id: std::collections::HashMap<i64, &MeasuredPatient> =
        measured.iter().map(|m| (m.patient_id, m)).collect();
    let entries = state.store.entries_of(&ids).await?;
    let mut rows: Vec<[String; 7]> = entries
        .iter()
        .filter_map(|entry| {
            let m = by_id.get(&entry.patient.id)?;
            Some(csv_row(entry, m, selection))
        })
        .collect();
    rows.sort();
    let set = if numerator {
        "numerator"
    } else {
        "denominator"
    };
    let shown: Vec<String> = ids.iter().map(i64::to_string).collect();
    let detail = serde_json::json!({
        "practice": selection.code,
        "from": selection.from.to_string(),
        "to": selection.to.to_string(),
        "set": set,
        "ids": shown.join(","),
    });
    let line = signed_in.audit_line("dashboard.export", AuditTarget::None);
    signed_in
        .audit(state, line.with_detail(detail.to_string()))
        .await?;
    let body = csv_text(&rows)?;
    let file = format!("enroll-cms-{set}-{}-{}.csv", selection.from, selection.to);
    Ok(csv_download(&file, body))
}

fn csv_row(
    entry: &enroll_store::WorkListEntry,
    measured: &MeasuredPatient,
    selection: &Selection,
) -> [String; 7] {
    let practice = selection
        .practices
        .iter()
        .find(|p| p.id == measured.practice_id)
        .map(|p| p.name.clone())
        .unwrap_or_default();
    let (visit, deadline, access) = match measured.outcome {
        MeasureOutcome::Timely {
            visit,
            deadline,
            access,
        } => (visit.to_string(), deadline.to_string(), access.words()),
        MeasureOutcome::NotTimely { visit, deadline } => (
            visit.to_string(),
            deadline.to_string(),
            "not given by the deadline".into(),
        ),
        MeasureOutcome::NotSeen => (String::new(), String::new(), String::new()),
    };
    [
        display_name(&entry.patient),
        entry.patient.mrn.clone(),
        entry
            .patient
            .demographics
            .date_of_birth
            .clone()
            .unwrap_or_default(),
        practice,
        visit,
        deadline,
        access,
    ]
}

fn csv_text(rows: &[[String; 7]]) -> Result<String, csv::Error> {
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record([
        "Patient",
        "MRN",
        "Date of birth",
        "Practice",
        "Visit",
        "Access deadline",
        "Access given",
    ])?;
    for row in rows {
        out.write_record(row.iter().map(|c| defused(c)))?;
    }
    let bytes = out.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_words_and_figures() {
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
        assert_eq!(percent(1, 3), "33.3%");
        assert_eq!(percent(2, 3), "66.7%");
        assert_eq!(percent(0, 0), "no one invited yet");
        assert_eq!(
            duration_words(SignedDuration::from_hours(76)),
            "3 days 4 hours"
        );
        assert_eq!(
            duration_words(SignedDuration::from_mins(61)),
            "1 hour 1 minute"
        );
        assert_eq!(duration_words(SignedDuration::from_mins(40)), "40 minutes");
    }
}
