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
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use enroll_hl7::{BirthSexSource, MappingOptions, MllpCodec};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use crate::intake::Intake;

/// `[mllp]`: the HL7 v2 listener the EHR sends to, and how its messages
/// are read.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MllpConfig {
    pub enabled: bool,
    /// Plain MLLP. The default takes messages from this machine only; set
    /// `0.0.0.0:2575` for an interface engine elsewhere on the network.
    pub listen: SocketAddr,
    /// MLLP inside TLS, e.g. `0.0.0.0:2576`; needs `tls_cert` and `tls_key`.
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate chain and private key for `tls_listen`.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Larger messages are answered AR (their first 4 KiB are kept).
    pub max_message_bytes: usize,
    /// A connection silent this long is closed (`idle_timeout_secs`, at
    /// least 1 in a file; tests may set less).
    #[serde(rename = "idle_timeout_secs", deserialize_with = "whole_seconds")]
    pub idle_timeout: Duration,
    /// Source addresses allowed to connect to either listener, as CIDR
    /// blocks (`["10.20.0.0/16", "192.168.5.7/32"]`); empty: any address
    /// that can reach the port. Others are closed at once and logged.
    pub allow: Vec<ipnet::IpNet>,
    /// Connections open at once per listener; more are closed and logged.
    pub max_connections: usize,
    /// A TLS handshake not finished by then is given up.
    #[serde(rename = "handshake_timeout_secs", deserialize_with = "whole_seconds")]
    pub handshake_timeout: Duration,
    /// An ACK the sender does not take within this long closes the
    /// connection (the message is stored; a resend gets the same ACK).
    #[serde(rename = "write_timeout_secs", deserialize_with = "whole_seconds")]
    pub write_timeout: Duration,
    /// Frames that are not HL7 (stray start bytes, oversize, cut off) one
    /// connection may make us store per minute; past it the connection is
    /// closed, so a noisy peer cannot fill the database.
    pub rejected_frames_per_minute: u32,
    /// Where birth sex comes from: `obx_then_pid8` (an OBX with LOINC
    /// 76689-9, else PID-8) or `pid8`.
    pub birth_sex_source: String,
    /// The PID-3 assigning authority whose identifier is the MRN; empty: the
    /// first identifier of type MR.
    pub mrn_assigning_authority: Option<String>,
}

impl Default for MllpConfig {
    fn default() -> MllpConfig {
        MllpConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 2575)),
            tls_listen: None,
            tls_cert: None,
            tls_key: None,
            max_message_bytes: 1024 * 1024,
            idle_timeout: Duration::from_secs(300),
            allow: Vec::new(),
            max_connections: 64,
            handshake_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            rejected_frames_per_minute: 30,
            birth_sex_source: "obx_then_pid8".into(),
            mrn_assigning_authority: None,
        }
    }
}

impl MllpConfig {
    /// How HL7 fields become patient data.
    pub fn mapping_options(&self) -> Result<MappingOptions, MllpStartError> {
        let birth_sex_source = match self.birth_sex_source.trim() {
            "obx_then_pid8" => BirthSexSource::ObxThenPid8,
            "pid8" => BirthSexSource::Pid8Only,
            other => {
                return Err(MllpStartError::Config(format!(
                    "mllp.birth_sex_source {other:?} is not one of obx_then_pid8, pid8"
                )));
            }
        };
        Ok(MappingOptions {
            birth_sex_source,
            mrn_assigning_authority: self
                .mrn_assigning_authority
                .clone()
                .filter(|a| !a.trim().is_empty()),
        })
    }

    /// The TLS port with its PEM files; all three or none.
    fn tls(&self) -> Result<Option<(SocketAddr, &Path, &Path)>, MllpStartError> {
        match (&self.tls_listen, &self.tls_cert, &self.tls_key) {
            (None, _, _) => Ok(None),
            (Some(listen), Some(cert), Some(key)) => Ok(Some((*listen, cert, key))),
            (Some(_), _, _) => Err(MllpStartError::Config(
                "mllp.tls_listen is set: set mllp.tls_cert and mllp.tls_key to PEM files too"
                    .into(),
            )),
        }
    }
}

/// A number of seconds, at least one.
fn whole_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let secs = u64::deserialize(d)?;
    Ok(Duration::from_secs(secs.max(1)))
}

/// A running listener.
pub struct RunningMllp {
    pub addr: SocketAddr,
    pub tls_addr: Option<SocketAddr>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningMllp {
    /// Stops accepting; each connection finishes the message in hand
    /// (stored, applied and answered), then closes.
    pub async fn stop(self) {
        self.stop.cancel();
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
    #[error("{0}")]
    Config(String),
}

/// Binds the port(s) and serves in the background until `stop` is
/// cancelled (or [`RunningMllp::stop`]).
pub async fn start(
    intake: Arc<Intake>,
    config: &MllpConfig,
    stop: CancellationToken,
) -> Result<RunningMllp, MllpStartError> {
    if config.max_message_bytes < 1024 {
        return Err(MllpStartError::Config(
            "mllp.max_message_bytes must be at least 1024".into(),
        ));
    }
    let tls = config.tls()?;
    let listener = bind(config.listen).await?;
    let addr = local_addr(&listener, config.listen)?;
    let mut tasks = vec![tokio::spawn(accept_loop(
        listener,
        None,
        intake.clone(),
        config.clone(),
        stop.clone(),
    ))];
    let mut tls_addr = None;
    if let Some((listen, cert, key)) = tls {
        let acceptor = tls_acceptor(cert, key)?;
        let listener = bind(listen).await?;
        tls_addr = Some(local_addr(&listener, listen)?);
        tasks.push(tokio::spawn(accept_loop(
            listener,
            Some(acceptor),
            intake,
            config.clone(),
            stop.clone(),
        )));
    }
    Ok(RunningMllp {
        addr,
        tls_addr,
        stop,
        tasks,
    })
}

fn local_addr(listener: &TcpListener, asked: SocketAddr) -> Result<SocketAddr, MllpStartError> {
    listener
        .local_addr()
        .map_err(|source| MllpStartError::Bind {
            addr: asked,
            source,
        })
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, MllpStartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| MllpStartError::Bind { addr, source })
}

fn tls_acceptor(cert_path: &Path, key_path: &Path) -> Result<TlsAcceptor, MllpStartError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            MllpStartError::Tls(format!(
                "cannot read the certificate chain {}: {e}",
                cert_path.display()
            ))
        })?;
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| {
        MllpStartError::Tls(format!(
            "cannot read the private key {}: {e}",
            key_path.display()
        ))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| MllpStartError::Tls(format!("the certificate and key do not fit: {e}")))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// True when `peer` may connect: no allowlist, or inside one of its blocks.
fn allowed(allow: &[ipnet::IpNet], peer: SocketAddr) -> bool {
    // An IPv4 peer on an IPv6 socket arrives as ::ffff:a.b.c.d.
    let ip = match peer.ip() {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
        v4 => v4,
    };
    allow.is_empty() || allow.iter().any(|net| net.contains(&ip))
}

/// The names the listeners' messages are stored with (`hl7_messages.listener`).
pub const PLAIN_LISTENER: &str = "mllp";
pub const TLS_LISTENER: &str = "mllp-tls";

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    intake: Arc<Intake>,
    settings: MllpConfig,
    stopped: CancellationToken,
) {
    let mut connections = JoinSet::new();
    let name = if tls.is_some() {
        TLS_LISTENER
    } else {
        PLAIN_LISTENER
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(settings.max_connections.max(1)));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopped.cancelled() => break,
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
        // The peer's address is the sending system's, not a patient's.
        if !allowed(&settings.allow, peer) {
            tracing::warn!(%peer, "MLLP connection refused: the address is not in [mllp] allow");
            continue;
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(
                %peer,
                max = settings.max_connections,
                "MLLP connection refused: too many connections open"
            );
            continue;
        };
        // ACKs are small writes the sender waits for: send them at once.
        let _ = stream.set_nodelay(true);
        let intake = intake.clone();
        let settings = settings.clone();
        let stopped = stopped.clone();
        match &tls {
            None => {
                connections.spawn(async move {
                    serve_connection(stream, peer, name, intake, settings, stopped).await;
                    drop(slot);
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                connections.spawn(async move {
                    let _slot = slot;
                    let handshake =
                        tokio::time::timeout(settings.handshake_timeout, acceptor.accept(stream))
                            .await;
                    match handshake {
                        Ok(Ok(stream)) => {
                            serve_connection(stream, peer, name, intake, settings, stopped).await;
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
    listener: &'static str,
    intake: Arc<Intake>,
    settings: MllpConfig,
    stopped: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut framed = Framed::new(stream, MllpCodec::new(settings.max_message_bytes));
    let peer_text = peer.to_string();
    let mut rejected = RejectedFrames::new(settings.rejected_frames_per_minute);
    tracing::debug!(%peer, "MLLP connection opened");
    loop {
        if stopped.is_cancelled() {
            break;
        }
        let next = tokio::select! {
            next = tokio::time::timeout(settings.idle_timeout, framed.next()) => next,
            () = stopped.cancelled() => break,
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
        if frame.is_err() && !rejected.one_more(tokio::time::Instant::now()) {
            tracing::warn!(
                %peer,
                cap = settings.rejected_frames_per_minute,
                "MLLP connection closed: too many frames that are not HL7 in a minute"
            );
            break;
        }
        let handled = match &frame {
            Ok(bytes) => {
                intake
                    .handle(bytes, Some(peer_text.clone()), Some(listener))
                    .await
            }
            Err(bad) => {
                intake
                    .handle_bad_frame(bad, Some(peer_text.clone()), Some(listener))
                    .await
            }
        };
        match handled {
            Ok(handled) => {
                tracing::debug!(
                    %peer,
                    message_id = handled.received.message_id,
                    status = handled.received.status.key(),
                    "HL7 message received"
                );
                match tokio::time::timeout(settings.write_timeout, framed.send(handled.ack)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(%peer, error = %e, "could not send the ACK");
                        break;
                    }
                    Err(_) => {
                        tracing::warn!(%peer, "the sender did not take the ACK in time; closing");
                        break;
                    }
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

/// The frames that were not HL7 in the last minute of one connection.
struct RejectedFrames {
    cap: u32,
    times: std::collections::VecDeque<tokio::time::Instant>,
}

impl RejectedFrames {
    fn new(cap: u32) -> RejectedFrames {
        RejectedFrames {
            cap,
            times: std::collections::VecDeque::new(),
        }
    }

    /// Counts one more at `now`; false when it is over the cap.
    fn one_more(&mut self, now: tokio::time::Instant) -> bool {
        while self
            .times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            self.times.pop_front();
        }
        if self.times.len() >= usize::try_from(self.cap).unwrap_or(usize::MAX) {
            return false;
        }
        self.times.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allowlist_takes_cidr_blocks_and_mapped_ipv4() {
        let allow: Vec<ipnet::IpNet> = vec!["10.20.0.0/16".parse().unwrap()];
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(allowed(&[], at("203.0.113.9:1000")));
        assert!(allowed(&allow, at("10.20.3.4:1000")));
        assert!(!allowed(&allow, at("10.21.0.1:1000")));
        assert!(allowed(&allow, at("[::ffff:10.20.3.4]:1000")));
    }

    #[test]
    fn rejected_frames_are_capped_per_minute() {
        let mut rejected = RejectedFrames::new(2);
        let start = tokio::time::Instant::now();
        assert!(rejected.one_more(start));
        assert!(rejected.one_more(start + Duration::from_secs(1)));
        assert!(!rejected.one_more(start + Duration::from_secs(2)));
        assert!(rejected.one_more(start + Duration::from_secs(61)));
    }
}
