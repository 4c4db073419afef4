//! The MLLP listener: HL7 v2 over TCP (and optionally TLS) from the
//! practice's EHR or interface engine.
//!
//! One task per connection reads frames in order and answers each with its
//! ACK only after [`Intake::handle`] has committed the message and its
//! effects, so a sender that got an ACK never needs to send again and one
//! that did not may. Connections are independent; within one, order is
//! kept because the next frame is read only after the ACK is written.
//! A connection silent for `idle_timeout` is closed. Stopping stops
//! accepting, lets every connection finish the message in hand, then closes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use enroll_hl7::MllpCodec;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::Framed;

use crate::intake::Intake;

/// Where and how to listen.
#[derive(Debug, Clone)]
pub struct MllpSettings {
    pub listen: SocketAddr,
    /// A second port speaking MLLP inside TLS.
    pub tls: Option<MllpTls>,
    /// Frames larger than this are answered AR and not read further.
    pub max_message_bytes: usize,
    /// A connection with no frame for this long is closed.
    pub idle_timeout: Duration,
}

/// The TLS port and its certificate chain and private key (PEM files).
#[derive(Debug, Clone)]
pub struct MllpTls {
    pub listen: SocketAddr,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

/// A running listener.
pub struct RunningMllp {
    pub addr: SocketAddr,
    pub tls_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningMllp {
    /// Stops accepting; each connection finishes the message in hand
    /// (stored, applied and answered), then closes.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Why the listener could not start, in words for the administrator.
#[derive(Debug, thiserror::Error)]
pub enum MllpStartError {
    #[error("cannot listen for MLLP on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("MLLP TLS: {0}")]
    Tls(String),
}

/// Binds the port(s) and serves in the background.
pub async fn start(
    intake: Arc<Intake>,
    settings: &MllpSettings,
) -> Result<RunningMllp, MllpStartError> {
    let (stop, stopped) = watch::channel(false);
    let listener = bind(settings.listen).await?;
    let addr = listener
        .local_addr()
        .map_err(|source| MllpStartError::Bind {
            addr: settings.listen,
            source,
        })?;
    let mut tasks = vec![tokio::spawn(accept_loop(
        listener,
        None,
        intake.clone(),
        settings.clone(),
        stopped.clone(),
    ))];
    let mut tls_addr = None;
    if let Some(tls) = &settings.tls {
        let acceptor = tls_acceptor(tls)?;
        let listener = bind(tls.listen).await?;
        tls_addr = Some(
            listener
                .local_addr()
                .map_err(|source| MllpStartError::Bind {
                    addr: tls.listen,
                    source,
                })?,
        );
        tasks.push(tokio::spawn(accept_loop(
            listener,
            Some(acceptor),
            intake,
            settings.clone(),
            stopped,
        )));
    }
    Ok(RunningMllp {
        addr,
        tls_addr,
        stop,
        tasks,
    })
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, MllpStartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| MllpStartError::Bind { addr, source })
}

fn tls_acceptor(tls: &MllpTls) -> Result<TlsAcceptor, MllpStartError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&tls.cert_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            MllpStartError::Tls(format!(
                "cannot read the certificate chain {}: {e}",
                tls.cert_path.display()
            ))
        })?;
    let key = PrivateKeyDer::from_pem_file(&tls.key_path).map_err(|e| {
        MllpStartError::Tls(format!(
            "cannot read the private key {}: {e}",
            tls.key_path.display()
        ))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| MllpStartError::Tls(format!("the certificate and key do not fit: {e}")))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    intake: Arc<Intake>,
    settings: MllpSettings,
    mut stopped: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.changed() => break,
        };
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: wait, do not spin.
                tracing::warn!(error = %e, "MLLP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // ACKs are small writes the sender waits for: send them at once.
        let _ = stream.set_nodelay(true);
        let intake = intake.clone();
        let settings = settings.clone();
        let stopped = stopped.clone();
        match &tls {
            None => {
                connections.spawn(serve_connection(stream, peer, intake, settings, stopped));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                connections.spawn(async move {
                    let handshake =
                        tokio::time::timeout(settings.idle_timeout, acceptor.accept(stream)).await;
                    match handshake {
                        Ok(Ok(stream)) => {
                            serve_connection(stream, peer, intake, settings, stopped).await;
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(%peer, error = %e, "MLLP TLS handshake failed");
                        }
                        Err(_) => tracing::warn!(%peer, "MLLP TLS handshake timed out"),
                    }
                });
            }
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    intake: Arc<Intake>,
    settings: MllpSettings,
    mut stopped: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut framed = Framed::new(stream, MllpCodec::new(settings.max_message_bytes));
    let peer_text = peer.to_string();
    tracing::debug!(%peer, "MLLP connection opened");
    loop {
        if *stopped.borrow() {
            break;
        }
        let next = tokio::select! {
            next = tokio::time::timeout(settings.idle_timeout, framed.next()) => next,
            _ = stopped.changed() => break,
        };
        let frame = match next {
            Err(_idle) => {
                tracing::debug!(%peer, "MLLP connection idle; closing");
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                tracing::debug!(%peer, error = %e, "MLLP connection read failed");
                break;
            }
            Ok(Some(Ok(frame))) => frame,
        };
        // From here on the message is in hand: it is finished even when a
        // stop is requested meanwhile.
        let handled = match &frame {
            Ok(bytes) => intake.handle(bytes, Some(peer_text.clone())).await,
            Err(bad) => intake.handle_bad_frame(bad, Some(peer_text.clone())).await,
        };
        match handled {
            Ok(handled) => {
                tracing::debug!(
                    %peer,
                    message_id = handled.received.message_id,
                    status = handled.received.status.key(),
                    "HL7 message received"
                );
                if let Err(e) = framed.send(handled.ack).await {
                    tracing::warn!(%peer, error = %e, "could not send the ACK");
                    break;
                }
            }
            Err(e) => {
                // Nothing was committed: no ACK, and closing tells the
                // sender to send the message again.
                tracing::error!(%peer, error = %e, "an HL7 message could not be stored; closing the connection so the sender retries");
                break;
            }
        }
    }
    tracing::debug!(%peer, "MLLP connection closed");
}
