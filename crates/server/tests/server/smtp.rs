//! A small SMTP server for fault injection (a 550 for one address, a 451
//! for another, down and back up). The happy path is also tested against
//! Python's aiosmtpd, a third-party server (see `delivery.rs`).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

#[derive(Debug, Clone)]
pub struct ReceivedMail {
    pub to: Vec<String>,
    pub data: String,
}

impl ReceivedMail {
    pub fn header(&self, name: &str) -> Option<String> {
        let prefix = format!("{}:", name.to_ascii_lowercase());
        self.data
            .lines()
            .take_while(|l| !l.is_empty())
            .find(|l| l.to_ascii_lowercase().starts_with(&prefix))
            .map(|l| l[prefix.len()..].trim().to_string())
    }
}

#[derive(Default)]
pub struct SmtpState {
    pub received: Mutex<Vec<ReceivedMail>>,
    /// RCPT TO these addresses answers 550 (no such mailbox).
    pub reject: Mutex<HashSet<String>>,
    /// RCPT TO these addresses answers 451 (try again later).
    pub defer: Mutex<HashSet<String>>,
}

pub struct TestSmtp {
    pub addr: SocketAddr,
    pub state: Arc<SmtpState>,
    task: Option<JoinHandle<()>>,
}

impl TestSmtp {
    pub async fn start() -> TestSmtp {
        Self::start_on(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(SmtpState::default()),
        )
        .await
    }

    /// Starts on `addr` (to come back on the same port after `stop`).
    pub async fn start_on(addr: SocketAddr, state: Arc<SmtpState>) -> TestSmtp {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let mut sessions = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                sessions.spawn(session(stream, shared.clone()));
            }
        });
        TestSmtp {
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

    pub fn received(&self) -> Vec<ReceivedMail> {
        self.state.received.lock().unwrap().clone()
    }
}

impl Drop for TestSmtp {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn session(stream: TcpStream, state: Arc<SmtpState>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut to = Vec::new();
    if write.write_all(b"220 test-smtp ready\r\n").await.is_err() {
        return;
    }
    while let Ok(Some(line)) = lines.next_line().await {
        let upper = line.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            "250-test-smtp\r\n250 8BITMIME\r\n".into()
        } else if upper.starts_with("HELO")
            || upper.starts_with("MAIL FROM")
            || upper.starts_with("RSET")
            || upper.starts_with("NOOP")
        {
            to.clear();
            "250 ok\r\n".into()
        } else if upper.starts_with("RCPT TO") {
            let address = line[8..]
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string();
            if state.reject.lock().unwrap().contains(&address) {
                "550 5.1.1 no such mailbox\r\n".into()
            } else if state.defer.lock().unwrap().contains(&address) {
                "451 4.3.0 try again later\r\n".into()
            } else {
                to.push(address);
                "250 ok\r\n".into()
            }
        } else if upper == "DATA" {
            if write.write_all(b"354 go ahead\r\n").await.is_err() {
                return;
            }
            let mut data = String::new();
            while let Ok(Some(line)) = lines.next_line().await {
                if line == "." {
                    break;
                }
                data.push_str(
                    line.strip_prefix('.')
                        .filter(|_| line.starts_with(".."))
                        .unwrap_or(&line),
                );
                data.push('\n');
            }
            state.received.lock().unwrap().push(ReceivedMail {
                to: std::mem::take(&mut to),
                data,
            });
            "250 queued\r\n".into()
        } else if upper == "QUIT" {
            let _ = write.write_all(b"221 bye\r\n").await;
            return;
        } else {
            "502 not implemented\r\n".into()
        };
        if write.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}
