//! The staff web UI: sign-in, patient search (right-click -> Patient
//! Portal -> Enroll Now), the chart with its banner's Patient Portal icon,
//! the confirmation of R11, and the admin pages for users and the audit
//! log, and the Integration Tool. Server-rendered (minijinja, the templates in `templates/staff_*`),
//! with one small script of our own for the context menu and the in-place
//! answers; no build step and nothing fetched from the internet.

mod admin;
mod chart;
mod dashboard;
mod in_person;
mod integration;
mod search;
pub mod session;
mod signin;
mod words;
mod worklists;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use minijinja::Value;
use serde::Serialize;

use crate::AppState;
use crate::pages::render;
use session::SignedIn;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/signin", get(signin::form).post(signin::sign_in))
        .route("/signout", post(signin::sign_out))
        .route("/search", get(search::page))
        .route("/patients/{id}", get(chart::page))
        .route(
            "/patients/{id}/demographics",
            post(chart::save_demographics),
        )
        .route("/patients/{id}/enroll", post(chart::enroll_now))
        .route("/patients/{id}/in-person", post(in_person::create))
        .route("/patients/{id}/in-person/{invite}", get(in_person::show))
        .route(
            "/patients/{id}/in-person/{invite}/letter",
            get(in_person::letter),
        )
        .route("/patients/{id}/confirm", post(chart::confirm))
        .route("/patients/{id}/response", post(chart::response))
        .route("/patients/{id}/status", get(chart::status))
        .route("/dashboard", get(dashboard::page))
        .route("/dashboard/cms.csv", get(dashboard::cms_csv))
        .route("/worklists", get(worklists::page))
        .route("/worklists.csv", get(worklists::csv))
        .route("/worklists/failed/{id}", post(worklists::resend))
        .route("/admin/users", get(admin::users).post(admin::add_user))
        .route("/admin/users/{id}", post(admin::change_user))
        .route("/admin/audit", get(admin::audit_log))
        .route("/admin/practices", get(integration::practices))
        .route("/admin/practices/{id}", get(integration::tool))
        .route(
            "/admin/practices/{id}/auto-invites",
            post(integration::auto_invites),
        )
        .route(
            "/admin/practices/{id}/schedule",
            post(integration::schedule),
        )
        .route("/admin/practices/{id}/phone", post(integration::phone))
        .route(
            "/admin/practices/{id}/channels",
            post(integration::channels),
        )
        .route(
            "/admin/practices/{id}/templates",
            get(integration::templates_page).post(integration::save_templates),
        )
        .route(
            "/admin/practices/{id}/go-live",
            get(integration::go_live_page).post(integration::go_live_start),
        )
        .route(
            "/admin/practices/{id}/go-live/progress",
            get(integration::go_live_progress),
        )
        .route(
            "/admin/practices/{id}/go-live/{run}",
            post(integration::go_live_change),
        )
        .route(
            "/admin/practices/{id}/roster",
            get(integration::roster_page),
        )
        .route(
            "/admin/practices/{id}/roster/progress",
            get(integration::roster_progress),
        )
        .route(
            "/admin/practices/{id}/roster/rejected.csv",
            get(integration::roster_rejected_csv),
        )
        .route(
            "/admin/practices/{id}/connections",
            get(integration::connections_page),
        )
        .route(
            "/admin/practices/{id}/connections/test-email",
            post(integration::connections_test_email),
        )
        .route(
            "/admin/practices/{id}/connections/test-sms",
            post(integration::connections_test_sms),
        )
        .route(
            "/admin/practices/{id}/connections/facilities",
            post(integration::connections_map_facility),
        )
        .route(
            "/admin/practices/{id}/connections/webhooks/{endpoint}/ping",
            post(integration::connections_ping),
        )
        .route("/static/staff.css", get(stylesheet))
        .route("/static/staff.js", get(script))
        .route("/static/letter.css", get(letter_stylesheet))
}

/// The roster upload, apart from the other pages for its own body limit
/// (`http.roster_upload_limit_bytes`: an export of a million rows is some
/// 100 MB, where a form is a few KB).
pub(crate) fn upload_router() -> Router<AppState> {
    Router::new().route(
        "/admin/practices/{id}/roster/upload",
        post(integration::roster_upload),
    )
}

pub(crate) use integration::RosterImports;

/// A CSV file to download as `file_name`; never cached (the lists hold
/// health data).
fn csv_download(file_name: &str, body: impl Into<axum::body::Body>) -> Response {
    let disposition = format!("attachment; filename=\"{file_name}\"");
    let headers = [
        (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
        (header::CONTENT_DISPOSITION, disposition),
        (header::CACHE_CONTROL, "no-store".to_string()),
    ];
    (headers, body.into()).into_response()
}

/// `/`: the search for a signed-in user, else sign-in.
async fn home(signed_in: Result<SignedIn, Response>) -> Redirect {
    match signed_in {
        Ok(_) => Redirect::to("/search"),
        Err(_) => Redirect::to("/signin"),
    }
}

async fn stylesheet() -> Response {
    static_file(
        "text/css; charset=utf-8",
        include_str!("../../static/staff.css"),
    )
}

async fn script() -> Response {
    static_file(
        "text/javascript; charset=utf-8",
        include_str!("../../static/staff.js"),
    )
}

async fn letter_stylesheet() -> Response {
    static_file(
        "text/css; charset=utf-8",
        include_str!("../../static/letter.css"),
    )
}

/// One of our own files (the pages take scripts and styles from files
/// only: see `http::CONTENT_SECURITY_POLICY`); no patient data, so it may
/// be kept a few minutes.
pub(crate) fn static_file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// Who is signed in, for the page header.
#[derive(Serialize)]
struct Viewer<'a> {
    name: &'a str,
    role: String,
    is_admin: bool,
    csrf: &'a str,
}

fn viewer(signed_in: &SignedIn) -> Viewer<'_> {
    Viewer {
        name: &signed_in.user.display_name,
        role: signed_in.user.role.to_string(),
        is_admin: signed_in.user.role.is_admin(),
        csrf: &signed_in.csrf,
    }
}

/// A staff page: the template with the viewer added. Pages hold health
/// data, so no browser or proxy may keep a copy.
fn staff_page(status: StatusCode, template: &str, signed_in: &SignedIn, ctx: Value) -> Response {
    let ctx = minijinja::context! { viewer => viewer(signed_in), ..ctx };
    let mut response = render(status, template, ctx);
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}

/// Every practice by its id, to show each row's practice (search results,
/// work lists).
pub(crate) async fn practices_by_id(
    state: &AppState,
) -> Result<std::collections::HashMap<i64, enroll_store::Practice>, enroll_store::StoreError> {
    let practices = state.store.practices().await?;
    Ok(practices.into_iter().map(|p| (p.id, p)).collect())
}

pub(crate) fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "staff page failed");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong on our side. Try again; if it keeps happening, tell your administrator.",
    )
        .into_response()
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        "There is no such patient among your practices' patients.",
    )
        .into_response()
}

/// "Nov 24, 2026 9:05 AM" in the practice's time zone.
fn local_time(at: Timestamp, tz: &TimeZone) -> String {
    tz.to_datetime(at)
        .strftime("%b %-d, %Y %-I:%M %p")
        .to_string()
}
