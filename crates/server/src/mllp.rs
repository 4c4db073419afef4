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

use enroll_hl7::{BirthSexSource, Header, MappingOptions, MllpCodec, MllpError};
use futures::{SinkExt, StreamExt};
use rustls::pki_types::CertificateDer;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use crate::intake::Intake;

mod senders;
pub use senders::{Refusal, SenderRule, Senders};

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
    /// Source addresses allowed to connect, as CIDR blocks
    /// (`["10.20.0.0/16", "192.168.5.7/32"]`); empty: any address that can
    /// reach the port. Others are closed at once and logged.
    pub allow: Vec<ipnet::IpNet>,
    /// The TLS port's own `allow`; unset: the same as `allow`.
    pub tls_allow: Option<Vec<ipnet::IpNet>>,
    /// PEM file of the CA(s) that sign the EHRs' client certificates. When
    /// set, the TLS port takes only connections whose client certificate
    /// that CA signed (mutual TLS); `senders` ties names to facilities.
    pub tls_client_ca: Option<PathBuf>,
    /// `[[mllp.senders]]`: the sending facilities (MSH-4) that may send,
    /// each from which addresses and with which certificate; empty: any.
    pub senders: Vec<SenderRule>,
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
            tls_allow: None,
            tls_client_ca: None,
            senders: Vec::new(),
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
    if config.tls_client_ca.is_some() && tls.is_none() {
        return Err(MllpStartError::Config(
            "mllp.tls_client_ca is set: client certificates need the TLS port, set \
             mllp.tls_listen, mllp.tls_cert and mllp.tls_key"
                .into(),
        ));
    }
    let senders = Senders::from_rules(&config.senders, config.tls_client_ca.is_some())
        .map_err(MllpStartError::Config)?;
    let senders = Arc::new(senders);
    let listener = bind(config.listen).await?;
    let addr = local_addr(&listener, config.listen)?;
    let plain = Listener {
        name: PLAIN_LISTENER,
        tls: None,
        allow: config.allow.clone(),
    };
    let mut tasks = vec![tokio::spawn(accept_loop(
        listener,
        plain,
        Shared::new(intake.clone(), config, senders.clone(), stop.clone()),
    ))];
    let mut tls_addr = None;
    if let Some((listen, cert, key)) = tls {
        let acceptor = tls_acceptor(cert, key, config.tls_client_ca.as_deref())?;
        let listener = bind(listen).await?;
        tls_addr = Some(local_addr(&listener, listen)?);
        let with_tls = Listener {
            name: TLS_LISTENER,
            tls: Some(acceptor),
            allow: config
                .tls_allow
                .clone()
                .unwrap_or_else(|| config.allow.clone()),
        };
        tasks.push(tokio::spawn(accept_loop(
            listener,
            with_tls,
            Shared::new(intake, config, senders, stop.clone()),
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

fn tls_acceptor(
    cert_path: &Path,
    key_path: &Path,
    client_ca: Option<&Path>,
) -> Result<TlsAcceptor, MllpStartError> {
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
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| MllpStartError::Tls(e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => builder.with_client_cert_verifier(client_verifier(ca, provider)?),
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| MllpStartError::Tls(format!("the certificate and key do not fit: {e}")))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Mutual TLS: every connection to the TLS port must show a certificate
/// signed by one of the CAs in `ca_path`.
fn client_verifier(
    ca_path: &Path,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, MllpStartError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let unreadable = |e: &dyn std::fmt::Display| {
        MllpStartError::Tls(format!(
            "cannot read the client CA file {} (mllp.tls_client_ca): {e}",
            ca_path.display()
        ))
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_path).map_err(|e| unreadable(&e))? {
        let cert = cert.map_err(|e| unreadable(&e))?;
        roots.add(cert).map_err(|e| unreadable(&e))?;
    }
    if roots.is_empty() {
        return Err(unreadable(&"it holds no certificate"));
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| unreadable(&e))
}

/// True when `peer` may connect: no allowlist, or inside one of its blocks.
fn allowed(allow: &[ipnet::IpNet], peer: SocketAddr) -> bool {
    let ip = unmapped(peer.ip());
    allow.is_empty() || allow.iter().any(|net| net.contains(&ip))
}

/// An IPv4 peer on an IPv6 socket arrives as ::ffff:a.b.c.d; its blocks
/// are written in IPv4.
fn unmapped(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
        v4 => v4,
    }
}

/// The names the listeners' messages are stored with (`hl7_messages.listener`).
pub const PLAIN_LISTENER: &str = "mllp";
pub const TLS_LISTENER: &str = "mllp-tls";

/// One listening port: its name in `hl7_messages.listener`, its TLS, and
/// which addresses may connect to it.
struct Listener {
    name: &'static str,
    tls: Option<TlsAcceptor>,
    allow: Vec<ipnet::IpNet>,
}

/// What every connection shares.
#[derive(Clone)]
struct Shared {
    intake: Arc<Intake>,
    settings: Arc<MllpConfig>,
    senders: Arc<Senders>,
    stopped: CancellationToken,
}

impl Shared {
    fn new(
        intake: Arc<Intake>,
        config: &MllpConfig,
        senders: Arc<Senders>,
        stopped: CancellationToken,
    ) -> Shared {
        Shared {
            intake,
            settings: Arc::new(config.clone()),
            senders,
            stopped,
        }
    }
}

/// Who is at the other end of one connection.
struct Peer {
    addr: SocketAddr,
    listener: &'static str,
    /// The client certificate the TLS handshake verified, if any.
    certificate: Option<CertificateDer<'static>>,
}

async fn accept_loop(listener: TcpListener, port: Listener, shared: Shared) {
    let mut connections = JoinSet::new();
    let settings = shared.settings.clone();
    let slots = Arc::new(tokio::sync::Semaphore::new(settings.max_connections.max(1)));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shared.stopped.cancelled() => break,
        };
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
        let (stream, addr) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: wait, do not spin.
                tracing::warn!(error = %e, "MLLP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // The peer's address is the sending system's, not a patient's.
        if !allowed(&port.allow, addr) {
            tracing::warn!(
                peer = %addr,
                listener = port.name,
                "MLLP connection refused: the address is not in the listener's allow list"
            );
            continue;
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(
                peer = %addr,
                max = settings.max_connections,
                "MLLP connection refused: too many connections open"
            );
            continue;
        };
        // ACKs are small writes the sender waits for: send them at once.
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let name = port.name;
        match &port.tls {
            None => {
                connections.spawn(async move {
                    let peer = Peer {
                        addr,
                        listener: name,
                        certificate: None,
                    };
                    serve_connection(stream, peer, shared).await;
                    drop(slot);
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                connections.spawn(async move {
                    let _slot = slot;
                    let timeout = shared.settings.handshake_timeout;
                    let handshake = tokio::time::timeout(timeout, acceptor.accept(stream)).await;
                    match handshake {
                        Ok(Ok(stream)) => {
                            let certificate = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|chain| chain.first())
                                .map(|cert| cert.clone().into_owned());
                            let peer = Peer {
                                addr,
                                listener: name,
                                certificate,
                            };
                            serve_connection(stream, peer, shared).await;
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(peer = %addr, error = %e, "MLLP TLS handshake failed");
                        }
                        Err(_) => tracing::warn!(peer = %addr, "MLLP TLS handshake timed out"),
                    }
                });
            }
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

async fn serve_connection<S>(stream: S, peer: Peer, shared: Shared)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Shared {
        intake,
        settings,
        senders,
        stopped,
    } = shared;
    let mut framed = Framed::new(stream, MllpCodec::new(settings.max_message_bytes));
    let addr = peer.addr;
    let peer_text = addr.to_string();
    let mut rejected = RejectedFrames::new(settings.rejected_frames_per_minute);
    tracing::debug!(peer = %addr, "MLLP connection opened");
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
                tracing::debug!(peer = %addr, "MLLP connection idle; closing");
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                tracing::debug!(peer = %addr, error = %e, "MLLP connection read failed");
                break;
            }
            Ok(Some(Ok(frame))) => frame,
        };
        // From here on the message is in hand: it is finished even when a
        // stop is requested meanwhile.
        let refusal = sender_refusal(&senders, &frame, &peer);
        if (frame.is_err() || refusal.is_err()) && !rejected.one_more(tokio::time::Instant::now()) {
            tracing::warn!(
                peer = %addr,
                cap = settings.rejected_frames_per_minute,
                "MLLP connection closed: too many frames refused or not HL7 in a minute"
            );
            break;
        }
        if let Err(refused) = refusal {
            let (header, refusal) = *refused;
            // Not stored: the sender is not known to speak for this
            // facility, so its bytes are not kept. The AR tells it why, and
            // its engine keeps the message in its own error queue.
            tracing::warn!(peer = %addr, listener = peer.listener, reason = %refusal, "MLLP message refused");
            let ack = intake.refusal_ack(header.as_ref(), &refusal.to_string());
            if !answer(&mut framed, ack, &settings, addr).await {
                break;
            }
            continue;
        }
        let handled = match &frame {
            Ok(bytes) => {
                intake
                    .handle(bytes, Some(peer_text.clone()), Some(peer.listener))
                    .await
            }
            Err(bad) => {
                intake
                    .handle_bad_frame(bad, Some(peer_text.clone()), Some(peer.listener))
                    .await
            }
        };
        match handled {
            Ok(handled) => {
                tracing::debug!(
                    peer = %addr,
                    message_id = handled.received.message_id,
                    status = handled.received.status.key(),
                    "HL7 message received"
                );
                if !answer(&mut framed, handled.ack, &settings, addr).await {
                    break;
                }
            }
            Err(e) => {
                // Nothing was committed: no ACK, and closing tells the
                // sender to send the message again.
                tracing::error!(peer = %addr, error = %e, "an HL7 message could not be stored; closing the connection so the sender retries");
                break;
            }
        }
    }
    tracing::debug!(peer = %addr, "MLLP connection closed");
}

/// Sends one ACK; false when the connection is to be closed.
async fn answer<S>(
    framed: &mut Framed<S, MllpCodec>,
    ack: Vec<u8>,
    settings: &MllpConfig,
    peer: SocketAddr,
) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(settings.write_timeout, framed.send(ack)).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::warn!(%peer, error = %e, "could not send the ACK");
            false
        }
        Err(_) => {
            tracing::warn!(%peer, "the sender did not take the ACK in time; closing");
            false
        }
    }
}

/// Checks the frame's MSH-4 against `[[mllp.senders]]`; on a refusal, the
/// header read for the AR.
fn sender_refusal<B: AsRef<[u8]>>(
    senders: &Senders,
    frame: &Result<B, MllpError>,
    peer: &Peer,
) -> Result<(), Box<(Option<Header>, Refusal)>> {
    if senders.is_open() {
        return Ok(());
    }
    let bytes = match frame {
        Ok(bytes) => bytes.as_ref(),
        Err(MllpError::TooLarge { head, .. } | MllpError::Incomplete { head, .. }) => head,
    };
    let header = first_segment_header(bytes);
    let facility = header
        .as_ref()
        .map_or("", |h| h.sending_facility.namespace_id.as_str());
    senders
        .check(facility, peer.addr.ip(), peer.certificate.as_ref())
        .map_err(|refusal| Box::new((header, refusal)))
}

/// MSH read from the first segment alone, so that a large message is not
/// decoded as a whole just to learn who sent it.
fn first_segment_header(bytes: &[u8]) -> Option<Header> {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace() && *b != 0x0B)
        .unwrap_or(bytes.len());
    let rest = &bytes[start..];
    let end = rest
        .iter()
        .position(|b| matches!(b, b'\r' | b'\n'))
        .unwrap_or(rest.len());
    Header::salvage(&String::from_utf8_lossy(&rest[..end]))
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
