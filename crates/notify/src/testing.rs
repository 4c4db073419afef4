//! An SMTP server for tests and benchmarks (feature `testing`): a sink on
//! loopback that keeps what it receives and can be told to misbehave.
//!
//! It speaks enough ESMTP for lettre and other clients: EHLO/HELO, AUTH
//! PLAIN and LOGIN (advertised and required only when credentials are set),
//! STARTTLS (advertised only when [`SmtpSinkState::starttls`] is set), MAIL,
//! RCPT, DATA (with dot-unstuffing), RSET, NOOP, QUIT; or all of that inside
//! TLS from the first byte ([`SmtpSink::start_tls_on`]). Its certificate is
//! for `localhost` and `127.0.0.1`, signed by a test CA ([`test_ca`]) that
//! clients must be told to trust. Faults are set per recipient address in
//! [`SmtpSinkState`]: `reject` answers RCPT with 550, `defer` with 451 (both
//! quote the address, as real servers do, so a test can check that no
//! address leaks into our error messages), `stall` never answers RCPT,
//! `stall_data` reads the whole message and then never answers.
//! [`SmtpSink::stop`] drops the listener and every open connection, and
//! [`SmtpSink::start_on`] brings a server back on the same port with the
//! same state ("down, then back up"). [`SmtpSinkState::connections`] counts
//! the connections accepted (to check a client's pool).
//!
//! It is built for throughput too (the delivery benchmark measures it as the
//! ceiling): one Tokio task per connection, buffered reads, byte-level
//! parsing, and `headers_only` to keep just the header block of each
//! message so that ten thousand messages cost little memory.

// Test support: a setup step that fails fails the test, loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use base64::Engine as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::{DeliveryError, OutgoingEmail};

/// One message as the sink received it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceivedMail {
    /// The reverse path of `MAIL FROM`, without angle brackets or parameters.
    pub mail_from: String,
    /// The accepted recipients (`RCPT TO`), without angle brackets.
    pub to: Vec<String>,
    /// The message as sent after `DATA`: CRLF line ends, dot-stuffing
    /// undone, without the final `.` line. With
    /// [`SmtpSinkState::headers_only`], only the header block (up to and
    /// including the blank line).
    pub data: String,
}

impl ReceivedMail {
    /// The value of the first header called `name` (any case), unfolded and
    /// trimmed: `header("Message-ID")` gives `Some("<id@host>")`.
    pub fn header(&self, name: &str) -> Option<String> {
        let mut lines = self.data.lines().take_while(|l| !l.is_empty()).peekable();
        while let Some(line) = lines.next() {
            let Some((field, value)) = line.split_once(':') else {
                continue;
            };
            if !field.eq_ignore_ascii_case(name) || field.starts_with([' ', '\t']) {
                continue;
            }
            let mut value = value.to_string();
            while let Some(next) = lines.next_if(|l| l.starts_with([' ', '\t'])) {
                value.push_str(next);
            }
            return Some(value.trim().to_string());
        }
        None
    }
}

/// What the sink received and how it answers; shared by every connection
/// and kept across [`SmtpSink::stop`] and [`SmtpSink::start_on`].
#[derive(Debug, Default)]
pub struct SmtpSinkState {
    /// Every message accepted, in order.
    pub received: Mutex<Vec<ReceivedMail>>,
    /// RCPT TO these addresses answers 550 (no such mailbox).
    pub reject: Mutex<HashSet<String>>,
    /// RCPT TO these addresses answers 451 (try again later).
    pub defer: Mutex<HashSet<String>>,
    /// RCPT TO these addresses never gets an answer (a stalled server).
    pub stall: Mutex<HashSet<String>>,
    /// A message to these addresses is read to its final `.` line and then
    /// never answered (a server that stalls mid-message); it is not kept.
    pub stall_data: Mutex<HashSet<String>>,
    /// Offer STARTTLS (with the test certificate) on plain connections.
    pub starttls: AtomicBool,
    /// Connections accepted so far, counted before any TLS handshake.
    pub connections: AtomicUsize,
    /// When set, AUTH is advertised and required, and only this username
    /// and password are accepted (535 otherwise).
    pub credentials: Mutex<Option<(String, String)>>,
    /// Keep only the header block of each message (benchmarks).
    pub headers_only: AtomicBool,
}

/// The message [`SmtpMailer`](crate::SmtpMailer) sends for `email` (the
/// same headers and MIME structure), for other SMTP clients in tests and
/// benchmarks.
pub fn build_message(email: &OutgoingEmail) -> Result<lettre::Message, DeliveryError> {
    crate::message::build_message(email)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SmtpSinkState {
    /// A state that keeps only headers (see `headers_only`).
    pub fn headers_only() -> SmtpSinkState {
        SmtpSinkState {
            headers_only: AtomicBool::new(true),
            ..SmtpSinkState::default()
        }
    }

    /// Requires AUTH with these credentials from now on.
    pub fn require_login(&self, username: &str, password: &str) {
        *lock(&self.credentials) = Some((username.to_string(), password.to_string()));
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }
}

/// The test CA that signed the sink's certificate; trust it (and nothing
/// else from this module) to talk TLS to the sink. Its key is public.
pub fn test_ca() -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(include_bytes!("../testdata/test-ca.pem"))
        .expect("testdata/test-ca.pem is a PEM certificate")
}

/// The sink's TLS server side: the `localhost` certificate of `testdata/`.
fn acceptor() -> TlsAcceptor {
    static ACCEPTOR: OnceLock<TlsAcceptor> = OnceLock::new();
    ACCEPTOR
        .get_or_init(|| {
            // Fixed files of this crate, not input: a failure is a bug here.
            let certificate =
                CertificateDer::from_pem_slice(include_bytes!("../testdata/localhost.pem"))
                    .expect("testdata/localhost.pem is a PEM certificate");
            let key = PrivateKeyDer::from_pem_slice(include_bytes!("../testdata/localhost.key"))
                .expect("testdata/localhost.key is a PEM private key");
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports the default TLS versions")
                .with_no_client_auth()
                .with_single_cert(vec![certificate, test_ca()], key)
                .expect("the test certificate matches its key");
            TlsAcceptor::from(Arc::new(config))
        })
        .clone()
}

/// A running sink on loopback; stops when dropped.
pub struct SmtpSink {
    pub addr: SocketAddr,
    pub state: Arc<SmtpSinkState>,
    task: Option<JoinHandle<()>>,
}

impl SmtpSink {
    /// A sink on a free loopback port with a fresh state.
    pub async fn start() -> SmtpSink {
        Self::start_on(
            "127.0.0.1:0".parse().expect("a socket address"),
            Arc::new(SmtpSinkState::default()),
        )
        .await
    }

    /// Starts on `addr` with `state` (to come back on the same port, with
    /// the same faults and the mail so far, after [`SmtpSink::stop`]).
    pub async fn start_on(addr: SocketAddr, state: Arc<SmtpSinkState>) -> SmtpSink {
        Self::listen(addr, state, false).await
    }

    /// Like [`SmtpSink::start_on`], with TLS from the first byte (as on
    /// port 465) with the certificate of [`test_ca`].
    pub async fn start_tls_on(addr: SocketAddr, state: Arc<SmtpSinkState>) -> SmtpSink {
        Self::listen(addr, state, true).await
    }

    async fn listen(addr: SocketAddr, state: Arc<SmtpSinkState>, implicit_tls: bool) -> SmtpSink {
        let listener = TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("the SMTP sink cannot listen on {addr}: {e}"));
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            // Owned here, so aborting this task drops every session too.
            let mut sessions = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let _ = stream.set_nodelay(true);
                        sessions.spawn(session(stream, Arc::clone(&shared), implicit_tls));
                    }
                    // Reaps finished sessions so a long run does not pile them up.
                    Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
                }
            }
        });
        SmtpSink {
            addr,
            state,
            task: Some(task),
        }
    }

    /// Stops listening and drops every open connection.
    pub fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// A copy of every message received so far.
    pub fn received(&self) -> Vec<ReceivedMail> {
        lock(&self.state.received).clone()
    }

    /// How many messages were received so far.
    pub fn count(&self) -> usize {
        lock(&self.state.received).len()
    }

    /// The distinct `Message-ID` values received so far.
    pub fn message_ids(&self) -> HashSet<String> {
        lock(&self.state.received)
            .iter()
            .filter_map(|m| m.header("Message-ID"))
            .collect()
    }

    /// Forgets the messages received so far (the faults stay).
    pub fn clear(&self) {
        lock(&self.state.received).clear();
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The angle-bracketed path of `MAIL FROM:<a> ...` / `RCPT TO:<a> ...`.
fn path_of(argument: &str) -> String {
    let argument = argument.trim();
    match argument.strip_prefix('<') {
        Some(rest) => rest.split('>').next().unwrap_or(rest).to_string(),
        None => argument.split(' ').next().unwrap_or(argument).to_string(),
    }
}

/// Decodes base64 into text (for AUTH); `None` when it is not valid.
fn decode(encoded: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    String::from_utf8(bytes).ok()
}

fn strip_crlf(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

struct Session<S> {
    /// Reads through the buffer, writes straight to the stream.
    io: BufReader<S>,
    state: Arc<SmtpSinkState>,
    line: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// The next line without its CRLF; `None` at the end of the connection.
    async fn read_line(&mut self) -> Option<String> {
        self.line.clear();
        match self.io.read_until(b'\n', &mut self.line).await {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(String::from_utf8_lossy(strip_crlf(&self.line)).into_owned()),
        }
    }

    async fn reply(&mut self, text: &str) -> bool {
        // The flush matters for TLS, which may hold a record back.
        self.io.write_all(text.as_bytes()).await.is_ok() && self.io.flush().await.is_ok()
    }

    /// Reads the message after 354 up to the `.` line.
    async fn read_data(&mut self) -> Option<String> {
        let headers_only = self.state.headers_only.load(Ordering::Relaxed);
        let mut data = Vec::with_capacity(if headers_only { 1024 } else { 8192 });
        let mut in_headers = true;
        loop {
            self.line.clear();
            match self.io.read_until(b'\n', &mut self.line).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            let content = strip_crlf(&self.line);
            if content == b"." {
                break;
            }
            if headers_only && !in_headers {
                continue;
            }
            // Undo dot-stuffing (RFC 5321 4.5.2).
            let content = content.strip_prefix(b".").unwrap_or(content);
            data.extend_from_slice(content);
            data.extend_from_slice(b"\r\n");
            if content.is_empty() {
                in_headers = false;
            }
        }
        Some(String::from_utf8_lossy(&data).into_owned())
    }

    /// AUTH PLAIN / LOGIN; true when the credentials match.
    async fn authenticate(&mut self, argument: &str) -> Option<bool> {
        let expected = lock(&self.state.credentials).clone();
        let mut words = argument.split_whitespace();
        let mechanism = words.next().unwrap_or("").to_ascii_uppercase();
        let initial = words.next().map(str::to_string);
        let (user, password) = match mechanism.as_str() {
            "PLAIN" => {
                let response = match initial {
                    Some(response) => response,
                    None => {
                        if !self.reply("334 \r\n").await {
                            return None;
                        }
                        self.read_line().await?
                    }
                };
                let decoded = decode(&response).unwrap_or_default();
                let mut parts = decoded.split('\0').skip(1);
                (
                    parts.next().unwrap_or("").to_string(),
                    parts.next().unwrap_or("").to_string(),
                )
            }
            "LOGIN" => {
                let user = match initial {
                    Some(user) => user,
                    None => {
                        // "Username:"
                        if !self.reply("334 VXNlcm5hbWU6\r\n").await {
                            return None;
                        }
                        self.read_line().await?
                    }
                };
                // "Password:"
                if !self.reply("334 UGFzc3dvcmQ6\r\n").await {
                    return None;
                }
                let password = self.read_line().await?;
                (
                    decode(&user).unwrap_or_default(),
                    decode(&password).unwrap_or_default(),
                )
            }
            _ => return Some(false),
        };
        Some(expected == Some((user, password)))
    }
}

async fn session(stream: TcpStream, state: Arc<SmtpSinkState>, implicit_tls: bool) {
    state.connections.fetch_add(1, Ordering::Relaxed);
    if implicit_tls {
        if let Ok(tls) = acceptor().accept(stream).await {
            conversation(tls, state, true, false).await;
        }
        return;
    }
    let offer_starttls = state.starttls.load(Ordering::Relaxed);
    let Some(stream) = conversation(stream, Arc::clone(&state), true, offer_starttls).await else {
        return;
    };
    // After "220 Ready to start TLS": the handshake, then a new SMTP
    // session without a greeting (RFC 3207).
    if let Ok(tls) = acceptor().accept(stream).await {
        conversation(tls, state, false, false).await;
    }
}

/// One SMTP conversation over `stream`; returns the stream when the client
/// asked for STARTTLS (offered only with `offer_starttls`) and got 220.
async fn conversation<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    state: Arc<SmtpSinkState>,
    greet: bool,
    offer_starttls: bool,
) -> Option<S> {
    let mut s = Session {
        io: BufReader::with_capacity(64 * 1024, stream),
        state,
        line: Vec::with_capacity(1024),
    };
    if greet && !s.reply("220 sink.test ESMTP ready\r\n").await {
        return None;
    }
    let mut authenticated = false;
    let mut mail: Option<ReceivedMail> = None;
    while let Some(command) = s.read_line().await {
        let (verb, argument) = match command.split_once(' ') {
            Some((verb, argument)) => (verb.to_ascii_uppercase(), argument.trim()),
            None => (command.trim().to_ascii_uppercase(), ""),
        };
        let auth_required = lock(&s.state.credentials).is_some();
        let reply: String = match verb.as_str() {
            "EHLO" => {
                let auth = if auth_required {
                    "250-AUTH PLAIN LOGIN\r\n"
                } else {
                    ""
                };
                let starttls = if offer_starttls {
                    "250-STARTTLS\r\n"
                } else {
                    ""
                };
                format!("250-sink.test\r\n250-8BITMIME\r\n{starttls}{auth}250 SIZE 10000000\r\n")
            }
            "STARTTLS" if offer_starttls => {
                if !s.reply("220 2.0.0 Ready to start TLS\r\n").await {
                    return None;
                }
                // Anything the client sent after STARTTLS before the
                // handshake would be plaintext injection: hang up.
                if !s.io.buffer().is_empty() {
                    return None;
                }
                return Some(s.io.into_inner());
            }
            "HELO" => "250 sink.test\r\n".into(),
            "NOOP" => "250 2.0.0 OK\r\n".into(),
            "RSET" => {
                mail = None;
                "250 2.0.0 OK\r\n".into()
            }
            "AUTH" if !auth_required => "503 5.5.1 AUTH not offered\r\n".into(),
            "AUTH" => match s.authenticate(argument).await {
                None => return None,
                Some(true) => {
                    authenticated = true;
                    "235 2.7.0 Authentication successful\r\n".into()
                }
                Some(false) => "535 5.7.8 Authentication credentials invalid\r\n".into(),
            },
            "MAIL" if auth_required && !authenticated => {
                "530 5.7.0 Authentication required\r\n".into()
            }
            "MAIL" => match argument.get(..5) {
                Some(from) if from.eq_ignore_ascii_case("FROM:") => {
                    mail = Some(ReceivedMail {
                        mail_from: path_of(&argument[5..]),
                        ..ReceivedMail::default()
                    });
                    "250 2.1.0 OK\r\n".into()
                }
                _ => "501 5.5.4 Syntax: MAIL FROM:<address>\r\n".into(),
            },
            "RCPT" => match (argument.get(..3), &mut mail) {
                (Some(to), Some(mail)) if to.eq_ignore_ascii_case("TO:") => {
                    let address = path_of(&argument[3..]);
                    if lock(&s.state.stall).contains(&address) {
                        // Never answers; the connection ends when the client
                        // gives up or the sink stops.
                        std::future::pending::<()>().await;
                        return None;
                    } else if lock(&s.state.reject).contains(&address) {
                        format!(
                            "550 5.1.1 <{address}>: Recipient address rejected: User unknown\r\n"
                        )
                    } else if lock(&s.state.defer).contains(&address) {
                        format!("451 4.3.0 <{address}>: Temporary lookup failure\r\n")
                    } else {
                        mail.to.push(address);
                        "250 2.1.5 OK\r\n".into()
                    }
                }
                (_, None) => "503 5.5.1 MAIL first\r\n".into(),
                _ => "501 5.5.4 Syntax: RCPT TO:<address>\r\n".into(),
            },
            "DATA" => match mail.take() {
                Some(mut received) if !received.to.is_empty() => {
                    if !s.reply("354 End data with <CR><LF>.<CR><LF>\r\n").await {
                        return None;
                    }
                    let data = s.read_data().await?;
                    let stalls = {
                        let stall_data = lock(&s.state.stall_data);
                        received.to.iter().any(|to| stall_data.contains(to))
                    };
                    if stalls {
                        // Never answers the final dot; the connection ends
                        // when the client gives up or the sink stops.
                        std::future::pending::<()>().await;
                    }
                    received.data = data;
                    lock(&s.state.received).push(received);
                    "250 2.0.0 Ok: queued\r\n".into()
                }
                _ => "503 5.5.1 No valid recipients\r\n".into(),
            },
            "QUIT" => {
                let _ = s.reply("221 2.0.0 Bye\r\n").await;
                return None;
            }
            _ => "502 5.5.2 Command not recognized\r\n".into(),
        };
        if !s.reply(&reply).await {
            return None;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::{ReceivedMail, path_of};

    #[test]
    fn headers_are_found_in_any_case_and_unfolded() {
        let mail = ReceivedMail {
            data: "Subject: Hi\r\nmessage-id: <a@b>\r\nX-Long: one\r\n two\r\n\r\nMessage-ID: body\r\n"
                .into(),
            ..ReceivedMail::default()
        };
        assert_eq!(mail.header("Message-ID").as_deref(), Some("<a@b>"));
        assert_eq!(mail.header("x-long").as_deref(), Some("one two"));
        assert_eq!(mail.header("To"), None);
    }

    #[test]
    fn paths_lose_brackets_and_parameters() {
        assert_eq!(path_of(" <a@b> BODY=8BITMIME SIZE=10"), "a@b");
        assert_eq!(path_of("a@b SIZE=10"), "a@b");
        assert_eq!(path_of("<>"), "");
    }
}
