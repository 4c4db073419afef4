//! The HTTP listeners: `listen` (everything: staff pages, the JSON API,
//! patient pages) and, when `http.patient_listen` is set, a second one
//! with the patient-facing pages only (activation, `/code`, the portal
//! sign-in, unsubscribe, the SMS webhook), so that only it need face the
//! internet.
//!
//! Each connection is served by hyper's HTTP/1.1 server on our own accept
//! loop, because `axum::serve` has no header-read timeout, connection
//! limit or TLS: at most `max_connections` connections at once (the rest
//! wait in the kernel's backlog), a client that has not sent a whole
//! request head within `header_read_timeout` (a slow-loris, or an idle
//! keep-alive connection) is cut off, and a TLS handshake gets the same
//! time. Every request then has `request_timeout` (408 after), a body
//! limit per group of routes (413 over it), the security headers, and a
//! log line that names the route template, never the URL: paths carry
//! activation tokens and the SMS webhook secret, queries carry the search
//! box (names, dates of birth, MRNs).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath};
use axum::http::{HeaderName, HeaderValue, Request, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::Layer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

/// `[http]`: limits, TLS and the patient-facing listener of the HTTP
/// server (where the main one listens is `listen`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// A connection that has not sent a whole request head this long after
    /// it opened (or after its last answer) is closed; also the time a TLS
    /// handshake may take (`header_read_timeout_secs`, at least 1 in a
    /// file; tests may set less).
    #[serde(
        rename = "header_read_timeout_secs",
        deserialize_with = "whole_seconds"
    )]
    pub header_read_timeout: Duration,
    /// A request not answered this long gets 408 (`request_timeout_secs`).
    #[serde(rename = "request_timeout_secs", deserialize_with = "whole_seconds")]
    pub request_timeout: Duration,
    /// Connections served at once per listener; more wait to be accepted.
    pub max_connections: usize,
    /// The largest request body of a patient page or the SMS webhook.
    pub patient_body_limit_bytes: usize,
    /// ... of a staff page form.
    pub staff_body_limit_bytes: usize,
    /// ... of a JSON API call.
    pub api_body_limit_bytes: usize,
    /// ... of a roster file uploaded on the admin page (it is spooled to
    /// a temporary file, not held in memory).
    pub roster_upload_limit_bytes: usize,
    /// PEM certificate chain and private key: both listeners speak HTTPS
    /// only (and send HSTS). Both or neither.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// A second listener with the patient-facing pages only, e.g.
    /// `0.0.0.0:8443`, so `listen` (staff pages and the API) can stay on
    /// the practice's network. `public_url` should name this one.
    pub patient_listen: Option<SocketAddr>,
}

impl Default for HttpConfig {
    fn default() -> HttpConfig {
        HttpConfig {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 512,
            patient_body_limit_bytes: 32 * 1024,
            staff_body_limit_bytes: 64 * 1024,
            api_body_limit_bytes: 1024 * 1024,
            roster_upload_limit_bytes: 512 * 1024 * 1024,
            tls_cert: None,
            tls_key: None,
            patient_listen: None,
        }
    }
}

impl HttpConfig {
    /// The TLS acceptor for both listeners, when `tls_cert` and `tls_key`
    /// are set.
    pub(crate) fn tls(&self) -> Result<Option<TlsAcceptor>, String> {
        match (&self.tls_cert, &self.tls_key) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => tls_acceptor(cert, key).map(Some),
            _ => Err("set both http.tls_cert and http.tls_key (PEM files), or neither".into()),
        }
    }
}

/// A number of seconds, at least one.
fn whole_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let secs = u64::deserialize(d)?;
    Ok(Duration::from_secs(secs.max(1)))
}

fn tls_acceptor(cert_path: &Path, key_path: &Path) -> Result<TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            format!(
                "HTTP TLS: cannot read the certificate chain {}: {e}",
                cert_path.display()
            )
        })?;
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| {
        format!(
            "HTTP TLS: cannot read the private key {}: {e}",
            key_path.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| format!("HTTP TLS: the certificate and key do not fit: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The policy of every page: scripts and styles only from our own files
/// (no inline script, style or handler), nothing from elsewhere, forms
/// post here only, and no one may frame a page.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

/// HTTPS only, for a year, once a browser has seen this over TLS.
const HSTS: &str = "max-age=31536000";

/// `routes` with its own body limit: longer bodies get 413, before the
/// handler runs when they say their length.
pub(crate) fn body_limit<S: Clone + Send + Sync + 'static>(
    routes: Router<S>,
    bytes: usize,
) -> Router<S> {
    routes
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(bytes))
}

/// The layers every route of a listener has: the request timeout, the
/// security headers (HSTS only on TLS) and the request log by route
/// template. `Cache-Control: no-store` goes on every answer that does not
/// set its own (only the static files do): pages and API answers carry
/// PHI, so no browser or proxy may keep a copy.
pub(crate) fn harden(app: Router, config: &HttpConfig, tls: bool) -> Router {
    let app = app.layer(TimeoutLayer::with_status_code(
        axum::http::StatusCode::REQUEST_TIMEOUT,
        config.request_timeout,
    ));
    let app = if tls {
        app.layer(SetResponseHeaderLayer::overriding(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        ))
    } else {
        app
    };
    let defaults: [(HeaderName, &'static str); 6] = [
        (header::CACHE_CONTROL, "no-store"),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
    ];
    let app = defaults.into_iter().fold(app, |app, (name, value)| {
        app.layer(SetResponseHeaderLayer::if_not_present(
            name,
            HeaderValue::from_static(value),
        ))
    });
    app.layer(
        TraceLayer::new_for_http().make_span_with(|request: &Request<axum::body::Body>| {
            // The template (`/a/{token}`), never the path or the query.
            let route = request
                .extensions()
                .get::<MatchedPath>()
                .map_or("(no route)", MatchedPath::as_str);
            tracing::debug_span!("request", method = %request.method(), route = %route)
        }),
    )
}

/// How one listener serves its connections.
#[derive(Clone)]
pub(crate) struct Serving {
    pub(crate) tls: Option<TlsAcceptor>,
    pub(crate) header_read_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) max_connections: usize,
}

impl Serving {
    pub(crate) fn new(config: &HttpConfig, tls: Option<TlsAcceptor>) -> Serving {
        Serving {
            tls,
            header_read_timeout: config.header_read_timeout,
            request_timeout: config.request_timeout,
            max_connections: config.max_connections.max(1),
        }
    }
}

/// Accepts until `stop`, then lets the requests in flight finish (for at
/// most the request timeout) while idle connections close.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    app: Router,
    serving: Serving,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(serving.max_connections));
    loop {
        let permit = tokio::select! {
            () = stop.cancelled() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait, then go on.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        // With the peer's address: the sign-in and activation pages throttle per IP.
        let service =
            TowerToHyperService::new(axum::Extension(ConnectInfo(peer)).layer(app.clone()));
        let watcher = graceful.watcher();
        let serving = serving.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match &serving.tls {
                None => serve_connection(tcp, service, &serving, watcher).await,
                Some(acceptor) => {
                    match tokio::time::timeout(serving.header_read_timeout, acceptor.accept(tcp))
                        .await
                    {
                        Ok(Ok(stream)) => {
                            serve_connection(stream, service, &serving, watcher).await
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "HTTP TLS handshake failed"),
                        Err(_) => tracing::debug!("HTTP TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    let grace = serving.request_timeout + Duration::from_secs(1);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections still open after the request timeout: closed");
    }
    Ok(())
}

type AppService =
    TowerToHyperService<axum::middleware::AddExtension<Router, ConnectInfo<SocketAddr>>>;

async fn serve_connection<I>(io: I, service: AppService, serving: &Serving, watcher: Watcher)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(serving.header_read_timeout)
        .max_buf_size(64 * 1024);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(connection).await {
        // hyper's words ("read header from client timeout", ...), no request data.
        tracing::debug!(error = %e, "HTTP connection ended");
    }
}
