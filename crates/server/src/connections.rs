//! What the Integration Tool's Connections page shows of this instance's
//! links to the outside (the MLLP listeners, the SMTP server, the SMS
//! provider) and the channels it sends a test message through. Built once
//! by the composition root from the same settings the listeners and the
//! dispatcher use, so the page says what is really in force.

use std::net::SocketAddr;

use enroll_notify::{SmsConfig, SmtpConfig, SmtpSecurity};

use crate::dispatcher::Channels;
use crate::mllp::MllpConfig;

/// One MLLP listener: its name (as its messages are stored), where it
/// listens (bound once started, else as configured) and whether it is TLS.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ListenerSummary {
    pub name: &'static str,
    pub address: String,
    pub tls: bool,
}

/// The instance's connections, without secrets.
#[derive(Clone)]
pub struct Connections {
    pub channels: Channels,
    pub email_from: String,
    /// "smtp.example.org:587, STARTTLS required, with a user name", or the
    /// demo mailbox.
    pub smtp: String,
    /// "smtp.example.org:587"; none for the demo mailbox.
    pub smtp_address: Option<String>,
    /// The SMS provider's host and sender number, when texting is set up.
    pub sms: Option<String>,
    /// As configured; empty when MLLP intake is off.
    mllp: Vec<ListenerSummary>,
    /// The addresses the listeners were bound to (a configured port 0
    /// becomes a real one), once started.
    bound: std::sync::OnceLock<(SocketAddr, Option<SocketAddr>)>,
    /// `[mllp] allow` as CIDR blocks; empty: any address.
    pub mllp_allow: Vec<String>,
    /// `[[mllp.senders]]` in words; empty: any sending facility.
    pub mllp_senders: Vec<SenderSummary>,
    /// `[mllp] tls_client_ca` is set: the TLS port asks for certificates.
    pub mllp_client_certificates: bool,
}

/// One `[[mllp.senders]]` rule as the Connections page shows it.
#[derive(Clone, serde::Serialize)]
pub struct SenderSummary {
    pub facility: String,
    /// "10.20.0.0/16, 10.30.0.7/32", or "any allowed address".
    pub from: String,
    /// "ehr.genhosp.example"; empty: no certificate needed.
    pub certificates: String,
}

impl Connections {
    pub(crate) fn new(
        channels: Channels,
        email_from: &str,
        smtp: Option<&SmtpConfig>,
        sms: Option<&SmsConfig>,
        mllp: &MllpConfig,
    ) -> Connections {
        Connections {
            channels,
            email_from: email_from.to_string(),
            smtp: smtp.map_or_else(
                || "the demo mailbox (/mailbox): nothing leaves this machine".to_string(),
                smtp_words,
            ),
            smtp_address: smtp.map(|s| format!("{}:{}", s.host, s.port)),
            sms: sms.filter(|s| s.enabled()).map(sms_words),
            mllp: listeners(mllp),
            bound: std::sync::OnceLock::new(),
            mllp_allow: mllp.allow.iter().map(ToString::to_string).collect(),
            mllp_senders: mllp.senders.iter().map(sender_summary).collect(),
            mllp_client_certificates: mllp.tls_client_ca.is_some(),
        }
    }
}

fn sender_summary(rule: &crate::mllp::SenderRule) -> SenderSummary {
    let from = if rule.allow.is_empty() {
        "any allowed address".to_string()
    } else {
        let blocks: Vec<String> = rule.allow.iter().map(ToString::to_string).collect();
        blocks.join(", ")
    };
    SenderSummary {
        facility: rule.facility.trim().to_string(),
        from,
        certificates: rule.certificate_names.join(", "),
    }
}

fn smtp_words(smtp: &SmtpConfig) -> String {
    let security = match smtp.security {
        SmtpSecurity::Plain => "no encryption (plain text)",
        SmtpSecurity::StartTls => "STARTTLS required",
        SmtpSecurity::Tls => "TLS from the first byte",
    };
    let login = if smtp.username.is_some() {
        "with a user name and password"
    } else {
        "without signing in"
    };
    format!("{}:{}, {security}, {login}", smtp.host, smtp.port)
}

fn sms_words(sms: &SmsConfig) -> String {
    let host = url::Url::parse(&sms.base_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| sms.base_url.clone());
    format!("{host}, sending from {}", sms.from)
}

impl Connections {
    /// Records where the MLLP listeners listen, once they are bound.
    pub(crate) fn listening(&self, plain: SocketAddr, tls: Option<SocketAddr>) {
        let _ = self.bound.set((plain, tls));
    }

    /// The MLLP listeners, with their bound addresses once started.
    pub fn mllp_listeners(&self) -> Vec<ListenerSummary> {
        let Some((plain, tls)) = self.bound.get() else {
            return self.mllp.clone();
        };
        self.mllp
            .iter()
            .map(|l| ListenerSummary {
                address: if l.tls { tls.unwrap_or(*plain) } else { *plain }.to_string(),
                ..l.clone()
            })
            .collect()
    }
}

fn listeners(mllp: &MllpConfig) -> Vec<ListenerSummary> {
    if !mllp.enabled {
        return Vec::new();
    }
    let summary = |addr: SocketAddr, tls| ListenerSummary {
        name: if tls {
            crate::mllp::TLS_LISTENER
        } else {
            crate::mllp::PLAIN_LISTENER
        },
        address: addr.to_string(),
        tls,
    };
    std::iter::once(summary(mllp.listen, false))
        .chain(mllp.tls_listen.map(|addr| summary(addr, true)))
        .collect()
}
