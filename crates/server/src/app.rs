//! The composition root: [`Application::build`] makes every part of a
//! running Enroll (store, links, templates, intake, mailer and SMS sender,
//! dispatcher, webhook sender, the HTTP and MLLP listeners) from one
//! [`Settings`], and
//! [`Application::start`] runs them until [`RunningApplication::stop`].
//! `enroll serve`, `enroll demo`, the server tests and the benchmarks all
//! start here, so a part is wired one way only.

use std::net::SocketAddr;
use std::sync::Arc;

use enroll_notify::{DeliveryError, HttpSmsSender, HttpWebhookSender, SmtpMailer};
use enroll_store::{Store, StoreError, Synchronous};
use rand::RngCore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::config::{DatabaseUrl, Settings};
use crate::dispatcher::{Channels, Dispatcher, RunningDispatcher};
use crate::intake::Intake;
use crate::links::{LINK_SECRET_SETTING, Links};
use crate::mailbox::Mailbox;
use crate::mllp::{MllpStartError, RunningMllp};
use crate::webhooks::{RunningWebhooks, WebhookDispatcher};
use crate::{AppState, Clock, RunningServer, SystemClock};

/// What is not configuration: where time comes from, and parts that the
/// demo and the tests make themselves.
pub struct Runtime {
    pub clock: Arc<dyn Clock>,
    /// A store that is already open and migrated (a test's database); none:
    /// connect to `database_url` and apply the migrations.
    pub store: Option<Store>,
    /// The demo's mailbox instead of SMTP and SMS: every invite is kept in
    /// memory and shown on `/mailbox`.
    pub mailbox: Option<Arc<Mailbox>>,
}

impl Runtime {
    /// The system clock, the configured database, SMTP and SMS.
    pub fn production() -> Runtime {
        Runtime {
            clock: Arc::new(SystemClock),
            store: None,
            mailbox: None,
        }
    }
}

/// Why Enroll could not start, in words for the administrator.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot open the database ({url}): {source}; {hint}")]
    Database {
        url: String,
        hint: &'static str,
        source: StoreError,
    },
    #[error("cannot apply migrations: {0}")]
    Migrate(StoreError),
    #[error("cannot listen on {addr}: {source} (set listen to another address, or port 0)")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("SMTP settings: {0}")]
    Smtp(DeliveryError),
    #[error("SMS settings: {0}")]
    Sms(DeliveryError),
    #[error("webhook settings: {0}")]
    Webhooks(DeliveryError),
    #[error("{0} (set mllp.listen to another address, or mllp.enabled = false)")]
    Mllp(#[from] MllpStartError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("the stored link-signing secret is not hex")]
    LinkSecret,
    #[error("public_url {0:?} must be an http:// or https:// address with a host name")]
    PublicUrl(String),
    #[error("{0}")]
    Http(String),
}

/// Every part, built and wired, not yet running.
pub struct Application {
    settings: Settings,
    state: AppState,
    dispatcher: Dispatcher,
    webhooks: WebhookDispatcher,
    listener: TcpListener,
    /// `http.patient_listen`, bound.
    patient_listener: Option<TcpListener>,
    /// Both HTTP listeners speak TLS when `http.tls_cert` is set.
    tls: Option<tokio_rustls::TlsAcceptor>,
    owns_store: bool,
}

impl Application {
    pub async fn build(settings: Settings, runtime: Runtime) -> Result<Application, BuildError> {
        // A store handed in is closed by whoever opened it.
        let owns_store = runtime.store.is_none();
        let store = match runtime.store {
            Some(store) => store,
            None => open(&settings.database_url, settings.sqlite.synchronous).await?,
        };
        let tls = settings.http.tls().map_err(BuildError::Http)?;
        // Bound now, so the links in the invites carry the real port.
        let (listener, addr) = bind(settings.listen).await?;
        let patient_listener = match settings.http.patient_listen {
            Some(listen) => Some(bind(listen).await?),
            None => None,
        };
        // Patients follow links to the patient-facing listener when there is one.
        let patients_reach = patient_listener.as_ref().map_or(addr, |(_, addr)| *addr);
        let public_url = public_url(&settings, patients_reach, tls.is_some())?;
        let links = Links::new(&public_url, &link_secret(&store).await?);
        let intake = Arc::new(Intake::new(
            store.clone(),
            runtime.clock.clone(),
            settings.mllp.mapping_options()?,
        ));
        let channels = channels(&settings, runtime.mailbox.as_ref())?;
        let activation = Arc::new(crate::activation::Activation::new(
            &settings.activation,
            channels.clone(),
            &settings.email_from,
        ));
        let connections = Arc::new(crate::connections::Connections::new(
            channels.clone(),
            &settings.email_from,
            runtime.mailbox.is_none().then_some(&settings.smtp),
            runtime.mailbox.is_none().then_some(&settings.sms),
            &settings.mllp,
        ));
        let state = AppState {
            templates: crate::templates::load(&store).await?,
            store,
            clock: runtime.clock,
            links,
            mailbox: runtime.mailbox,
            sms_webhook_secret: settings.sms.webhook_secret.clone(),
            intake,
            // Cookies are Secure when staff reach us over HTTPS.
            staff_ui: crate::ui::session::StaffUi::new(
                &settings.staff_ui,
                tls.is_some() || public_url.scheme() == "https",
            ),
            activation,
            connections,
            roster_imports: Arc::default(),
        };
        let dispatcher =
            Dispatcher::new(&state, channels, &settings.email_from, &settings.delivery)
                .with_link_lifetime(settings.activation.link_lifetime());
        let webhooks = webhook_dispatcher(&settings, &state)?;
        Ok(Application {
            settings,
            state,
            dispatcher,
            webhooks,
            listener,
            patient_listener: patient_listener.map(|(listener, _)| listener),
            tls,
            owns_store,
        })
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The dispatcher as configured (it runs only after `start`, and only
    /// when `delivery.enabled`).
    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    /// The webhook sender as configured (it runs only after `start`, and
    /// only when `webhooks.enabled`).
    pub fn webhooks(&self) -> &WebhookDispatcher {
        &self.webhooks
    }

    /// Starts the MLLP listener (when enabled), the dispatcher and the
    /// webhook sender (each when enabled) and the HTTP server.
    pub async fn start(self) -> Result<RunningApplication, BuildError> {
        let stop = CancellationToken::new();
        let mllp = if self.settings.mllp.enabled {
            Some(
                crate::mllp::start(
                    self.state.intake.clone(),
                    &self.settings.mllp,
                    stop.child_token(),
                )
                .await?,
            )
        } else {
            None
        };
        if let Some(m) = &mllp {
            self.state.connections.listening(m.addr, m.tls_addr);
        }
        let delivering = self.settings.delivery.enabled.then(|| {
            self.dispatcher
                .clone()
                .spawn_until(self.settings.delivery.poll_interval(), stop.child_token())
        });
        let posting_webhooks = self.settings.webhooks.enabled.then(|| {
            self.webhooks
                .clone()
                .spawn_until(self.settings.webhooks.poll_interval(), stop.child_token())
        });
        let serving = crate::http::Serving::new(&self.settings.http, self.tls.clone());
        let tls = self.tls.is_some();
        let listening = |source| BuildError::Listen {
            addr: self.settings.listen,
            source,
        };
        let http = crate::serve(
            self.listener,
            crate::router(
                self.state.clone(),
                &self.settings.http,
                crate::Surface::Everything,
                tls,
            ),
            serving.clone(),
            stop.child_token(),
        )
        .map_err(listening)?;
        let patient_http = match self.patient_listener {
            Some(listener) => Some(
                crate::serve(
                    listener,
                    crate::router(
                        self.state.clone(),
                        &self.settings.http,
                        crate::Surface::PatientPages,
                        tls,
                    ),
                    serving,
                    stop.child_token(),
                )
                .map_err(listening)?,
            ),
            None => None,
        };
        Ok(RunningApplication {
            http_addr: http.addr,
            patient_http_addr: patient_http.as_ref().map(|p| p.addr),
            mllp_addr: mllp.as_ref().map(|m| m.addr),
            mllp_tls_addr: mllp.as_ref().and_then(|m| m.tls_addr),
            state: self.state,
            dispatcher: self.dispatcher,
            webhooks: self.webhooks,
            http,
            patient_http,
            mllp,
            delivering,
            posting_webhooks,
            owns_store: self.owns_store,
        })
    }
}

/// A running Enroll.
pub struct RunningApplication {
    pub http_addr: SocketAddr,
    /// The patient-facing listener (`http.patient_listen`).
    pub patient_http_addr: Option<SocketAddr>,
    pub mllp_addr: Option<SocketAddr>,
    pub mllp_tls_addr: Option<SocketAddr>,
    state: AppState,
    dispatcher: Dispatcher,
    webhooks: WebhookDispatcher,
    http: RunningServer,
    patient_http: Option<RunningServer>,
    mllp: Option<RunningMllp>,
    delivering: Option<RunningDispatcher>,
    posting_webhooks: Option<RunningWebhooks>,
    owns_store: bool,
}

impl RunningApplication {
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The dispatcher as configured (tests run rounds of it, or variants
    /// with another sender, when `delivery.enabled` is off).
    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    /// The webhook sender as configured (tests run rounds of it when
    /// `webhooks.enabled` is off).
    pub fn webhooks(&self) -> &WebhookDispatcher {
        &self.webhooks
    }

    /// Stops in the order that loses nothing: the MLLP listener first (the
    /// messages in hand are stored and answered), then HTTP (requests in
    /// flight finish), then the dispatcher (what it claimed goes out and is
    /// recorded) and the webhook sender (likewise; the events the others'
    /// last transactions queued wait in the outbox for the next start),
    /// then the database pool if the application opened it.
    pub async fn stop(self) -> std::io::Result<()> {
        if let Some(mllp) = self.mllp {
            mllp.stop().await;
        }
        let served = self.http.stop().await;
        let patient_served = match self.patient_http {
            Some(server) => server.stop().await,
            None => Ok(()),
        };
        if let Some(delivering) = self.delivering {
            delivering.stop().await;
        }
        if let Some(posting) = self.posting_webhooks {
            posting.stop().await;
        }
        if self.owns_store {
            self.state.store.close().await;
        }
        served.and(patient_served)
    }
}

/// Connects and migrates; `synchronous` is SQLite's durability (`[sqlite]`).
pub async fn open(url: &DatabaseUrl, synchronous: Synchronous) -> Result<Store, BuildError> {
    let store = Store::connect_with(url.expose(), synchronous)
        .await
        .map_err(|source| BuildError::Database {
            url: url.redacted(),
            hint: url.hint(),
            source,
        })?;
    store.migrate().await.map_err(BuildError::Migrate)?;
    Ok(store)
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), BuildError> {
    let listening = |source| BuildError::Listen { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(listening)?;
    let bound = listener.local_addr().map_err(listening)?;
    Ok((listener, bound))
}

/// Where patients reach this server: `public_url`, or the address of the
/// listener patients use (https:// when it speaks TLS).
fn public_url(settings: &Settings, listening: SocketAddr, tls: bool) -> Result<Url, BuildError> {
    let scheme = if tls { "https" } else { "http" };
    let url = match &settings.public_url {
        Some(url) => url.clone(),
        None => Url::parse(&format!("{scheme}://{listening}"))
            .map_err(|_| BuildError::PublicUrl(listening.to_string()))?,
    };
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(BuildError::PublicUrl(url.to_string()));
    }
    Ok(url)
}

/// The demo's mailbox, or SMTP and (when an account is set) SMS.
fn channels(settings: &Settings, mailbox: Option<&Arc<Mailbox>>) -> Result<Channels, BuildError> {
    if let Some(mailbox) = mailbox {
        return Ok(Channels {
            email: mailbox.clone(),
            sms: Some(mailbox.clone()),
        });
    }
    let email = Arc::new(SmtpMailer::new(&settings.smtp).map_err(BuildError::Smtp)?);
    let sms = if settings.sms.enabled() {
        let sender = HttpSmsSender::new(&settings.sms).map_err(BuildError::Sms)?;
        Some(Arc::new(sender) as Arc<dyn enroll_notify::SmsSender>)
    } else {
        None
    };
    Ok(Channels { email, sms })
}

/// The sender of the practices' webhooks, posting over HTTPS.
fn webhook_dispatcher(
    settings: &Settings,
    state: &AppState,
) -> Result<WebhookDispatcher, BuildError> {
    let sender =
        HttpWebhookSender::new(settings.webhooks.timeout()).map_err(BuildError::Webhooks)?;
    Ok(WebhookDispatcher::new(
        state.store.clone(),
        state.clock.clone(),
        Arc::new(sender),
        &settings.webhooks,
    ))
}

/// The secret that signs unsubscribe links: made once, kept in the database
/// so every instance and every restart uses the same one.
async fn link_secret(store: &Store) -> Result<Vec<u8>, BuildError> {
    let mut fresh = [0u8; 32];
    rand::rng().fill_bytes(&mut fresh);
    let secret = store
        .setting_or_insert(LINK_SECRET_SETTING, &hex::encode(fresh))
        .await?;
    hex::decode(secret).map_err(|_| BuildError::LinkSecret)
}
