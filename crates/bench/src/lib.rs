//! Benchmarks of Enroll (see the README, "Benchmarks"); the binary is
//! `delivery`. This library holds what the binary compares against.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use enroll_notify::{DeliveryError, EmailSender, OutgoingEmail};
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::extension::ClientId;
use tokio::net::TcpStream;

/// A plain-SMTP sender like `SmtpMailer` (lettre, pooled connections, the
/// same message) except that its sockets have `TCP_NODELAY`.
///
/// lettre 0.11 never sets `TCP_NODELAY`, and writes the message body and
/// the final `.` line in two writes: Nagle's algorithm holds the 5-byte
/// `.` line until the server acknowledges the body, and servers delay that
/// acknowledgement (40 ms on Linux). Every message then costs about 40 ms
/// per connection, whatever the server. This sender shows what the
/// dispatcher does without that stall; it is a measuring aid for loopback
/// servers (no TLS, no login), not a replacement for `SmtpMailer`.
pub struct NodelayMailer {
    addr: SocketAddr,
    hello: ClientId,
    idle: Mutex<Vec<AsyncSmtpConnection>>,
    max_idle: usize,
    timeout: Duration,
}

impl NodelayMailer {
    pub fn new(addr: SocketAddr, pool_size: usize, timeout: Duration) -> NodelayMailer {
        NodelayMailer {
            addr,
            hello: ClientId::Domain("bench.test".into()),
            idle: Mutex::new(Vec::new()),
            max_idle: pool_size.max(1),
            timeout,
        }
    }

    fn take_idle(&self) -> Option<AsyncSmtpConnection> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    /// Back to the pool when healthy and there is room; otherwise QUIT.
    async fn give_back(&self, mut connection: AsyncSmtpConnection) {
        if connection.has_broken() {
            return;
        }
        {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < self.max_idle {
                idle.push(connection);
                return;
            }
        }
        let _ = connection.quit().await;
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, DeliveryError> {
        let stream = tokio::time::timeout(self.timeout, TcpStream::connect(self.addr))
            .await
            .map_err(|_| transient("connect timed out"))?
            .map_err(|e| transient(format_args!("connect: {}", e.kind())))?;
        stream
            .set_nodelay(true)
            .map_err(|e| transient(format_args!("TCP_NODELAY: {}", e.kind())))?;
        tokio::time::timeout(
            self.timeout,
            AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello),
        )
        .await
        .map_err(|_| transient("greeting timed out"))?
        .map_err(|e| classify(&e))
    }
}

fn transient(what: impl std::fmt::Display) -> DeliveryError {
    DeliveryError::Transient(format!("SMTP: {what}"))
}

fn classify(err: &lettre::transport::smtp::Error) -> DeliveryError {
    let code = err.status().map_or_else(String::new, |c| c.to_string());
    if err.is_permanent() {
        DeliveryError::Permanent(format!("SMTP refused ({code})"))
    } else {
        transient(format_args!("failed ({code})"))
    }
}

#[async_trait::async_trait]
impl EmailSender for NodelayMailer {
    async fn send_email(&self, email: &OutgoingEmail) -> Result<(), DeliveryError> {
        let message = enroll_notify::testing::build_message(email)?;
        let mut connection = match self.take_idle() {
            Some(connection) => connection,
            None => self.connect().await?,
        };
        let sent = tokio::time::timeout(
            self.timeout,
            connection.send(message.envelope(), &message.formatted()),
        )
        .await;
        match sent {
            Ok(Ok(_)) => {
                self.give_back(connection).await;
                Ok(())
            }
            Ok(Err(e)) => {
                self.give_back(connection).await;
                Err(classify(&e))
            }
            // Mid-conversation: never reused.
            Err(_) => Err(transient("the server did not answer in time")),
        }
    }
}
