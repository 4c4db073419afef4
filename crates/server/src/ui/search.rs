//! The home page after sign-in: one search box, results as a table whose
//! rows open the Patient Portal menu on right-click or Shift+F10.

use enroll_store::{Audit, AuditTarget};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use enroll_core::{SearchTerms, StaffStatus};
use enroll_store::{Patient, PatientSearch, Practice};
use jiff::civil::Date;
use minijinja::context;
use serde::{Deserialize, Serialize};

use super::session::SignedIn;
use super::{internal, practices_by_id, staff_page};
use crate::AppState;

#[derive(Deserialize)]
pub(crate) struct SearchQuery {
    #[serde(default)]
    q: String,
}

/// One result row.
#[derive(Serialize)]
pub(crate) struct Row {
    id: i64,
    name: String,
    dob: String,
    age: Option<i16>,
    birth_sex: String,
    mrn: String,
    practice: String,
    badge: &'static str,
    badge_class: &'static str,
    status_words: String,
    /// "Resend invitation" is offered when an invite was sent.
    was_invited: bool,
}

pub(crate) async fn page_inner(
    state: &AppState,
    signed_in: &SignedIn,
    typed: &str,
) -> Result<(Vec<Row>, bool), enroll_store::StoreError> {
    let terms = SearchTerms::parse(typed);
    if terms.is_empty() {
        return Ok((Vec::new(), false));
    }
    let found = state
        .store
        .search_patients(&PatientSearch {
            terms,
            practice_id: None,
            scope: signed_in.user.scope.clone(),
            limit: Some(50),
        })
        .await?;
    let practices = practices_by_id(state).await?;
    let now = state.clock.now();
    let statuses = state.store.patient_statuses(&found, now).await?;
    let rows: Vec<Row> = found
        .iter()
        .filter_map(|patient| {
            let practice = practices.get(&patient.practice_id)?;
            let status = statuses.get(&patient.id)?;
            Some(row(patient, practice, status, now))
        })
        .collect();
    // The audit line names what was looked for and which patients were shown.
    let shown = AuditTarget::Search {
        terms: typed.to_string(),
        ids: found.iter().map(|p| p.id).collect(),
    };
    state
        .store
        .audit(
            &Audit::new(&signed_in.user.username, "patient.search", shown),
            now,
        )
        .await?;
    Ok((rows, true))
}

fn row(patient: &Patient, practice: &Practice, status: &StaffStatus, now: jiff::Timestamp) -> Row {
    let (badge, badge_class) = status.badge();
    let d = &patient.demographics;
    let today = practice.schedule.local_date(now);
    Row {
        id: patient.id,
        name: display_name(patient),
        dob: d.date_of_birth.clone().unwrap_or_default(),
        age: d
            .date_of_birth
            .as_deref()
            .and_then(|dob| dob.parse::<Date>().ok())
            .map(|dob| age_on(dob, today)),
        birth_sex: d.birth_sex.clone().unwrap_or_default(),
        mrn: patient.mrn.clone(),
        practice: practice.name.clone(),
        badge,
        badge_class,
        status_words: super::words::status_line(status, &practice.schedule.tz),
        was_invited: !matches!(badge_class, "not-invited"),
    }
}

/// "Smith, John" (or what is known of it).
pub(crate) fn display_name(patient: &Patient) -> String {
    let d = &patient.demographics;
    match (d.last_name.as_deref(), d.first_name.as_deref()) {
        (Some(last), Some(first)) => format!("{last}, {first}"),
        (Some(one), None) | (None, Some(one)) => one.to_string(),
        (None, None) => format!("(no name) MRN {}", patient.mrn),
    }
}

/// Whole years between `dob` and `today`.
pub(crate) fn age_on(dob: Date, today: Date) -> i16 {
    let mut years = today.year() - dob.year();
    if (today.month(), today.day()) < (dob.month(), dob.day()) {
        years -= 1;
    }
    years
}

pub(crate) async fn page(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Query(query): Query<SearchQuery>,
) -> Response {
    let typed = query.q.trim();
    match page_inner(&state, &signed_in, typed).await {
        Ok((rows, searched)) => staff_page(
            StatusCode::OK,
            "staff_search.html",
            &signed_in,
            context! { q => typed, rows, searched },
        ),
        Err(e) => internal(e),
    }
}

#[cfg(test)]
mod tests {
    use super::age_on;
    use jiff::civil::date;

    #[test]
    fn age_turns_on_the_birthday() {
        assert_eq!(age_on(date(1990, 7, 4), date(2026, 7, 3)), 35);
        assert_eq!(age_on(date(1990, 7, 4), date(2026, 7, 4)), 36);
        assert_eq!(age_on(date(2000, 2, 29), date(2026, 2, 28)), 25);
        assert_eq!(age_on(date(2000, 2, 29), date(2026, 3, 1)), 26);
    }
}
