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
pub mod dispatcher;
mod error;
pub mod intake;
pub mod links;
pub mod mailbox;
pub mod mllp;
mod pages;
mod password;
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
use tower_http::trace::TraceLayer;

pub use activation::ActivationConfig;
pub use app::{Application, BuildError, RunningApplication, Runtime};
pub use clock::{Clock, SystemClock, TestClock};
pub use config::{DatabaseUrl, Settings};
pub use dispatcher::{Channels, DeliveryConfig, Dispatcher, RoundSummary, RunningDispatcher};
pub use error::ApiError;
pub use intake::Intake;
pub use links::{LINK_SECRET_SETTING, Links};
pub use mailbox::Mailbox;
pub use mllp::{MllpConfig, RunningMllp};
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
}

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(ui::router())
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .nest("/api", api::router())
        .merge(activation::router())
        .route(
            "/unsubscribe/{invite}/{signature}",
            get(pages::unsubscribe_form).post(pages::unsubscribe),
        )
        .route("/mailbox", get(pages::mailbox_page))
        .route("/mailbox.json", get(pages::mailbox_json))
        .route("/webhooks/sms/{secret}", post(pages::sms_webhook))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
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

/// Serves on `listener` in the background until `stop` is cancelled.
pub(crate) fn serve(
    listener: TcpListener,
    state: AppState,
    stop: CancellationToken,
) -> std::io::Result<RunningServer> {
    let addr = listener.local_addr()?;
    let app = router(state);
    let stopped = stop.clone();
    let task = tokio::spawn(async move {
        // With the peer's address: the sign-in and activation pages throttle per IP.
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stopped.cancelled_owned())
        .await
    });
    Ok(RunningServer { addr, stop, task })
}
