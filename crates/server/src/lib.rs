//! Enroll's servers: HTTP (health checks, the JSON API, patient pages), the
//! outbox dispatcher, the webhook sender and the HL7 MLLP listener.
//!
//! Handlers are thin: extract, parse into domain types, call one store
//! operation (which applies the rules inside its transaction), map the result.

pub mod activation;
mod api;
pub mod app;
mod auth;
pub mod clock;
pub mod config;
pub mod connections;
pub mod dispatcher;
mod error;
pub mod fhir;
pub mod http;
pub mod intake;
pub mod links;
pub mod mailbox;
pub mod mllp;
mod pages;
mod password;
pub mod roster;
mod rounds;
pub mod templates;
mod throttle;
pub mod ui;
pub mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use enroll_notify::SecretString;
use enroll_store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use activation::ActivationConfig;
pub use app::{Application, BuildError, RunningApplication, Runtime};
pub use clock::{Clock, SystemClock, TestClock};
pub use config::{DatabaseUrl, Settings, SqliteConfig};
pub use dispatcher::{Channels, DeliveryConfig, Dispatcher, RoundSummary, RunningDispatcher};
pub use error::ApiError;
pub use http::HttpConfig;
pub use intake::Intake;
pub use links::{LINK_SECRET_SETTING, Links};
pub use mailbox::Mailbox;
pub use mllp::{MllpConfig, Refusal, RunningMllp, SenderRule, Senders};
pub use password::{hash_password, verify_password};
pub use templates::SharedTemplates;
pub use ui::session::random_secret;
pub use webhooks::{RunningWebhooks, WebhookConfig, WebhookDispatcher, WebhookRound};

/// Shared by every handler; made by [`Application::build`].
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub links: Links,
    /// Only in `enroll demo`: the page that shows what was "sent".
    pub mailbox: Option<Arc<Mailbox>>,
    /// The secret path segment of the inbound SMS webhook; none = no webhook.
    pub sms_webhook_secret: Option<SecretString>,
    /// Invite templates in force (built-in plus practice overrides).
    pub templates: SharedTemplates,
    /// HL7 intake, shared with the MLLP listener (reprocessing uses it).
    pub intake: Arc<Intake>,
    /// The staff pages' sign-in policy (idle sign-out, lockout, throttle).
    pub staff_ui: Arc<ui::session::StaffUi>,
    /// The patient activation pages' rules, throttle and code channels.
    pub activation: Arc<activation::Activation>,
    /// The listeners and channels as configured, for the Connections page.
    pub connections: Arc<connections::Connections>,
    /// The latest roster upload of each practice, while and after it loads.
    pub(crate) roster_imports: Arc<ui::RosterImports>,
}

/// Which pages a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// Staff pages, the JSON API, the demo mailbox and the patient pages.
    Everything,
    /// The patient-facing pages only (`http.patient_listen`).
    PatientPages,
}

/// The HTTP application of one listener, with its limits and headers.
pub fn router(state: AppState, config: &HttpConfig, surface: Surface, tls: bool) -> Router {
    let patient = http::body_limit(
        activation::router()
            .route(
                "/unsubscribe/{invite}/{signature}",
                get(pages::unsubscribe_form).post(pages::unsubscribe),
            )
            .route("/webhooks/sms/{secret}", post(pages::sms_webhook))
            .route("/static/patient.css", get(pages::patient_stylesheet))
            .route("/static/base.css", get(pages::base_stylesheet))
            .route("/healthz", get(healthz)),
        config.patient_body_limit_bytes,
    );
    let app = match surface {
        Surface::PatientPages => patient,
        Surface::Everything => patient
            .merge(http::body_limit(
                ui::router()
                    .route("/readyz", get(readyz))
                    .route("/mailbox", get(pages::mailbox_page))
                    .route("/mailbox.json", get(pages::mailbox_json))
                    .route("/static/mailbox.js", get(pages::mailbox_script)),
                config.staff_body_limit_bytes,
            ))
            .merge(http::body_limit(
                ui::upload_router(),
                config.roster_upload_limit_bytes,
            ))
            .nest(
                "/api",
                http::body_limit(api::router(), config.api_body_limit_bytes),
            )
            .nest(
                "/fhir",
                http::body_limit(fhir::router(), config.api_body_limit_bytes),
            ),
    };
    http::harden(app.with_state(state), config, tls)
}

/// Liveness: the process answers.
async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: the database answers.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check: database unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response()
        }
    }
}

/// A running server: its address and a handle to stop it.
pub struct RunningServer {
    pub addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// Stops accepting, lets requests in flight finish, and waits.
    pub async fn stop(self) -> std::io::Result<()> {
        self.stop.cancel();
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}

/// Serves `app` on `listener` in the background until `stop` is cancelled.
pub(crate) fn serve(
    listener: TcpListener,
    app: Router,
    serving: http::Serving,
    stop: CancellationToken,
) -> std::io::Result<RunningServer> {
    let addr = listener.local_addr()?;
    let task = tokio::spawn(http::accept_loop(listener, app, serving, stop.clone()));
    Ok(RunningServer { addr, stop, task })
}
