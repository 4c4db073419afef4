//! The SMTP connections behind [`SmtpMailer`](crate::SmtpMailer): opened
//! here (TCP with `TCP_NODELAY`, then STARTTLS or implicit TLS, then AUTH),
//! spoken over by lettre's [`AsyncSmtpConnection`], and kept in a small
//! bounded pool. Why the mailer does not use lettre's own transport and pool
//! is explained on [`SmtpMailer`](crate::SmtpMailer).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker, ready};
use std::time::{Duration, Instant};

use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsConnector;

use crate::DeliveryError;
use crate::smtp_error::classify;

/// An idle connection older than this is closed rather than reused (lettre's
/// pool default): servers drop idle clients after a few minutes anyway.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long closing an idle connection (QUIT) may take before it is dropped.
const QUIT_TIMEOUT: Duration = Duration::from_secs(5);

/// How the socket is secured before and after the greeting.
pub(crate) enum Security {
    Plain,
    /// STARTTLS is required: a server that does not offer it gets nothing.
    StartTls(TlsParameters),
    /// TLS from the first byte.
    Tls {
        connector: TlsConnector,
        server_name: ServerName<'static>,
    },
}

/// Opens ready-to-send connections: connected, greeted (EHLO), secured and
/// logged in.
pub(crate) struct Connector {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) security: Security,
    pub(crate) credentials: Option<Credentials>,
    /// The EHLO name lettre's transport sent too: this machine's host name
    /// (`ClientId::default()`).
    pub(crate) hello: ClientId,
    /// For each address the host name resolves to.
    pub(crate) connect_timeout: Duration,
}

/// One open SMTP session.
pub(crate) struct Connection {
    pub(crate) smtp: AsyncSmtpConnection,
    /// The socket under `smtp` (see [`SharedTcp`]), to look at it while idle.
    tcp: Arc<TcpStream>,
}

impl Connection {
    /// True when nothing is waiting to be read. A healthy idle SMTP session
    /// has nothing to read; one the server closed (an idle timeout, a
    /// restart) has an end of stream or a last "421" waiting. This costs no
    /// round trip, unlike the NOOP lettre's pool sends before each reuse.
    /// Best effort: a close that arrived a moment ago may not be seen yet
    /// (tokio's readiness lags the socket); that send then fails as
    /// transient and the dispatcher retries it.
    fn is_quiet(&self) -> bool {
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        // A no-op waker: this only asks whether something is already there;
        // the next real read registers its own waker.
        let mut cx = Context::from_waker(Waker::noop());
        matches!(self.tcp.poll_peek(&mut cx, &mut buf), Poll::Pending)
    }
}

impl Connector {
    /// A new connection, within `connect_timeout` per address and otherwise
    /// unbounded: callers apply the overall time limit.
    pub(crate) async fn connect(&self) -> Result<Connection, DeliveryError> {
        let tcp = Arc::new(self.tcp().await?);
        let shared = SharedTcp(Arc::clone(&tcp));
        let mut smtp = match &self.security {
            Security::Plain | Security::StartTls(_) => {
                AsyncSmtpConnection::connect_with_transport(Box::new(shared), &self.hello)
                    .await
                    .map_err(|err| classify(&err))?
            }
            Security::Tls {
                connector,
                server_name,
            } => {
                let tls = connector
                    .connect(server_name.clone(), shared)
                    .await
                    .map_err(|err| {
                        DeliveryError::Transient(format!("TLS with the SMTP server failed: {err}"))
                    })?;
                AsyncSmtpConnection::connect_with_transport(Box::new(TlsTcp(tls)), &self.hello)
                    .await
                    .map_err(|err| classify(&err))?
            }
        };
        if let Security::StartTls(parameters) = &self.security {
            if !smtp.can_starttls() {
                smtp.abort().await;
                return Err(DeliveryError::Transient(
                    "the SMTP server does not offer STARTTLS, which the configured security \
                     (starttls) requires; nothing was sent (use security \"tls\" for a port-465 \
                     server, \"plain\" only for a relay on the same host)"
                        .to_owned(),
                ));
            }
            smtp.starttls(parameters.clone(), &self.hello)
                .await
                .map_err(|err| starttls_failed(&err))?;
        }
        if let Some(credentials) = &self.credentials
            && let Err(err) = smtp.auth(DEFAULT_MECHANISMS, credentials).await
        {
            smtp.abort().await;
            return Err(auth_failed(&err));
        }
        Ok(Connection { smtp, tcp })
    }

    /// A TCP connection to the first address of the host that answers, with
    /// `TCP_NODELAY` (the reason this module exists; see `SmtpMailer`).
    async fn tcp(&self) -> Result<TcpStream, DeliveryError> {
        let addresses = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|err| {
                DeliveryError::Transient(format!(
                    "the SMTP host name could not be resolved: {}",
                    err.kind()
                ))
            })?;
        let mut last_error = None;
        for address in addresses {
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(address)).await {
                Ok(Ok(stream)) => {
                    if let Err(err) = stream.set_nodelay(true) {
                        // Only slower (see SmtpMailer), still correct.
                        tracing::warn!(error = %err, "TCP_NODELAY could not be set on the SMTP connection");
                    }
                    return Ok(stream);
                }
                Ok(Err(err)) => last_error = Some(err.kind()),
                Err(_elapsed) => last_error = Some(io::ErrorKind::TimedOut),
            }
        }
        Err(match last_error {
            Some(kind) => DeliveryError::Transient(format!("SMTP connection failed: {kind}")),
            None => {
                DeliveryError::Transient("the SMTP host name resolved to no address".to_owned())
            }
        })
    }
}

/// The innermost cause, e.g. rustls' "invalid peer certificate: UnknownIssuer".
fn root_cause(err: &lettre::transport::smtp::Error) -> String {
    let mut cause: &dyn std::error::Error = err;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}

/// STARTTLS failures are transient like other TLS failures: a certificate
/// gets renewed, a relay node gets fixed.
fn starttls_failed(err: &lettre::transport::smtp::Error) -> DeliveryError {
    match err.status() {
        Some(code) => {
            DeliveryError::Transient(format!("the SMTP server answered {code} during STARTTLS"))
        }
        None => DeliveryError::Transient(format!(
            "TLS with the SMTP server failed (STARTTLS): {}",
            root_cause(err)
        )),
    }
}

/// A refused login (535 and the like) is permanent, through [`classify`];
/// so is a server that offers no login method lettre has (PLAIN, LOGIN):
/// both need the configuration changed.
fn auth_failed(err: &lettre::transport::smtp::Error) -> DeliveryError {
    if err.status().is_none() && err.is_client() {
        return DeliveryError::Permanent(
            "the SMTP server offers no login method this client supports (AUTH PLAIN or \
             LOGIN) although a username is configured: check the SMTP security setting"
                .to_owned(),
        );
    }
    classify(err)
}

/// The connections of one mailer: at most `size` in use at once (each use
/// holds a slot), and the idle ones kept for reuse, most recent first.
///
/// A connection goes back to the idle list before its slot is released, and
/// a new one is opened only by a slot holder that found the list empty, so
/// there are never more than `size` connections open (but for idle ones
/// being closed).
pub(crate) struct Pool {
    idle: Mutex<Vec<Idle>>,
    slots: Arc<Semaphore>,
    size: usize,
}

struct Idle {
    connection: Connection,
    since: Instant,
}

impl Pool {
    pub(crate) fn new(size: usize) -> Arc<Pool> {
        let size = size.clamp(1, Semaphore::MAX_PERMITS);
        Arc::new(Pool {
            idle: Mutex::new(Vec::new()),
            slots: Arc::new(Semaphore::new(size)),
            size,
        })
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Idle>> {
        // The list stays consistent even if a holder panicked.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a free slot; `None` only if the pool was closed (never).
    pub(crate) async fn slot(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.slots).acquire_owned().await.ok()
    }

    /// An idle connection that still looks usable; closes the others.
    pub(crate) fn take_idle(&self) -> Option<Connection> {
        loop {
            let Idle { connection, since } = self.idle().pop()?;
            if since.elapsed() >= IDLE_TIMEOUT {
                close_later(connection);
            } else if connection.is_quiet() {
                return Some(connection);
            }
            // Otherwise the server closed it or spoke out of turn: dropped.
        }
    }

    /// Keeps `connection` for reuse unless lettre saw it break (any failed
    /// command makes lettre QUIT, so after a refusal it is not reusable).
    pub(crate) fn give_back(&self, connection: Connection) {
        if connection.smtp.has_broken() {
            return;
        }
        let mut idle = self.idle();
        if idle.len() < self.size {
            idle.push(Idle {
                connection,
                since: Instant::now(),
            });
        } else {
            drop(idle);
            close_later(connection);
        }
    }

    /// Closes the connections idle for `IDLE_TIMEOUT` or more.
    fn close_stale(&self) {
        let stale: Vec<Idle> = {
            let mut idle = self.idle();
            let (stale, fresh) = std::mem::take(&mut *idle)
                .into_iter()
                .partition(|entry| entry.since.elapsed() >= IDLE_TIMEOUT);
            *idle = fresh;
            stale
        };
        for entry in stale {
            close_later(entry.connection);
        }
    }

    /// Closes idle connections every half `IDLE_TIMEOUT` until the pool is
    /// dropped (the task holds only a weak reference).
    pub(crate) fn spawn_reaper(pool: &Arc<Pool>) {
        let pool: Weak<Pool> = Arc::downgrade(pool);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(IDLE_TIMEOUT / 2);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is immediate.
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(pool) = pool.upgrade() else {
                    return;
                };
                pool.close_stale();
            }
        });
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let idle = std::mem::take(self.idle.get_mut().unwrap_or_else(|p| p.into_inner()));
        for entry in idle {
            close_later(entry.connection);
        }
    }
}

/// Says QUIT in the background (bounded by `QUIT_TIMEOUT`) when a runtime
/// is there; otherwise just closes the socket.
fn close_later(mut connection: Connection) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let _ = tokio::time::timeout(QUIT_TIMEOUT, connection.smtp.quit()).await;
        });
    }
}

/// A TCP stream that lettre reads and writes while the pool keeps a second
/// handle to peek at it (see [`Connection::is_quiet`]): lettre owns the
/// streams it is given and offers no way to look at them.
#[derive(Debug)]
struct SharedTcp(Arc<TcpStream>);

impl AsyncRead for SharedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            // `try_read` clears the readiness on WouldBlock, so the next
            // `poll_read_ready` waits for the socket again.
            match self.0.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => return Poll::Ready(Err(err)),
            }
        }
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => return Poll::Ready(Err(err)),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Writes go straight to the socket.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A shared tokio stream cannot be half-closed; the socket closes when
        // the connection (both handles) is dropped, right after lettre's
        // QUIT, which is all a shutdown would add.
        Poll::Ready(Ok(()))
    }
}

impl AsyncTokioStream for SharedTcp {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.peer_addr()
    }
}

/// Implicit TLS over [`SharedTcp`]; a newtype because lettre's
/// `AsyncTokioStream` is foreign to tokio-rustls' stream.
#[derive(Debug)]
struct TlsTcp(tokio_rustls::client::TlsStream<SharedTcp>);

impl AsyncRead for TlsTcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsTcp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for TlsTcp {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}
