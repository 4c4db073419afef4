//! The demo's mailbox: an email and SMS "provider" that keeps every message
//! in memory and shows it on `/mailbox`, so the whole flow can be seen
//! without a mail server or an SMS account. Never used outside `enroll demo`.

use std::sync::Mutex;

use async_trait::async_trait;
use enroll_notify::{DeliveryError, EmailSender, OutgoingEmail, OutgoingSms, SmsSender};
use jiff::Timestamp;
use serde::Serialize;

/// One message the demo "sent".
#[derive(Debug, Clone, Serialize)]
pub struct MailboxMessage {
    pub id: usize,
    pub at: Timestamp,
    /// "email" or "sms"
    pub channel: &'static str,
    pub to: String,
    pub subject: Option<String>,
    pub text: String,
    pub html: Option<String>,
    pub message_id: Option<String>,
}

#[derive(Default)]
pub struct Mailbox {
    messages: Mutex<Vec<MailboxMessage>>,
}

impl Mailbox {
    /// Every message, newest first.
    pub fn messages(&self) -> Vec<MailboxMessage> {
        let mut all = self
            .messages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        all.reverse();
        all
    }

    fn push(&self, mut message: MailboxMessage) -> usize {
        let mut messages = self.messages.lock().unwrap_or_else(|p| p.into_inner());
        message.id = messages.len() + 1;
        let id = message.id;
        messages.push(message);
        id
    }
}

#[async_trait]
impl EmailSender for Mailbox {
    async fn send_email(&self, email: &OutgoingEmail) -> Result<(), DeliveryError> {
        self.push(MailboxMessage {
            id: 0,
            at: Timestamp::now(),
            channel: "email",
            to: email.to.as_str().to_string(),
            subject: Some(email.content.subject.clone()),
            text: email.content.text.clone(),
            html: Some(email.content.html.clone()),
            message_id: Some(email.message_id.clone()),
        });
        Ok(())
    }
}

#[async_trait]
impl SmsSender for Mailbox {
    async fn send_sms(&self, sms: &OutgoingSms) -> Result<String, DeliveryError> {
        let id = self.push(MailboxMessage {
            id: 0,
            at: Timestamp::now(),
            channel: "sms",
            to: sms.to.as_str().to_string(),
            subject: None,
            text: sms.body.clone(),
            html: None,
            message_id: None,
        });
        Ok(format!("mailbox-{id}"))
    }
}
