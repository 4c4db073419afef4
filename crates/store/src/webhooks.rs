//! Signed webhooks (issue #12 item 4): a practice's endpoints, and the
//! outbox of events for them.
//!
//! An event is written in the transaction of the change it tells of, so
//! none is lost (a crash after the commit still has it queued) and none
//! is invented (a rolled-back change takes its event with it). Every
//! event is also a line on the patient's timeline, and that is where it
//! is published: [`Tx::timeline`] and [`Tx::timeline_rows`] hand the
//! lines that are events ([`WebhookEvent::of`]) to
//! [`Tx::publish_webhooks`], so no path that records an activation, a
//! sent, failed or suppressed invite can forget its webhook.
//!
//! The sender (crates/server/src/webhooks.rs) claims due rows with a lease
//! as the dispatcher claims invites, posts them with no transaction open,
//! and records the outcome (`enroll_core::webhook_outcome`).

use std::collections::HashMap;
use std::fmt;

use enroll_core::{
    AutoDecision, Channel, RetryPolicy, WebhookAnswer, WebhookEventType, WebhookOutcome,
};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use serde_json::json;
use sqlx::AssertSqlSafe;

use crate::audit::{Audit, AuditTarget};
use crate::batch::BatchRow;
use crate::engine::Col;
use crate::timeline::TimelineEvent;
use crate::tx::{Tx, on_tx};
use crate::{Result, Store, StoreError, from_ms, on_pool, opt_from_ms, to_ms};

/// A practice's endpoint as the administrator sees it (never the secret,
/// which is shown once, when it is made).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebhookEndpoint {
    pub id: i64,
    pub practice_id: i64,
    pub url: String,
    pub events: Vec<WebhookEventType>,
    pub enabled: bool,
    pub created_at: Timestamp,
    pub created_by: String,
}

/// An endpoint to add; the URL checked and the secret chosen by the caller.
pub struct NewWebhookEndpoint<'a> {
    pub practice_id: i64,
    pub url: &'a str,
    pub secret: &'a str,
    pub events: &'a [WebhookEventType],
    pub created_by: &'a str,
}

/// One event to one endpoint, for the administrator's list of recent
/// deliveries (without the body).
#[derive(Debug, Clone, Serialize)]
pub struct WebhookDelivery {
    pub id: i64,
    pub event_id: String,
    pub event_type: String,
    /// queued | delivered | failed
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: Option<Timestamp>,
    pub last_attempt_at: Option<Timestamp>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub delivered_at: Option<Timestamp>,
    pub created_at: Timestamp,
}

/// A claimed delivery, with what the sender needs to post it.
#[derive(Clone)]
pub struct WebhookJob {
    pub delivery_id: i64,
    pub endpoint_id: i64,
    pub event_id: String,
    pub event_type: String,
    pub body: String,
    pub url: String,
    pub secret: String,
    /// 1-based number of the attempt about to be made.
    pub attempt: i64,
}

/// Shows neither the secret nor the body (an MRN).
impl fmt::Debug for WebhookJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookJob")
            .field("delivery_id", &self.delivery_id)
            .field("endpoint_id", &self.endpoint_id)
            .field("event_type", &self.event_type)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

/// What became of an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookFinished {
    Delivered,
    Retry {
        at: Timestamp,
    },
    Failed {
        reason: String,
    },
    /// Another sender recorded it first (our lease ran out).
    AlreadyDone,
}

/// An event a patient's timeline line tells of, before it is addressed to
/// endpoints.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum WebhookEvent {
    PatientActivated,
    InviteSent {
        invite_id: i64,
        channels: Vec<Channel>,
        attempt: i64,
    },
    /// The reason is left out: an SMTP server's refusal may quote the address.
    InviteFailed {
        invite_id: i64,
        attempt: i64,
    },
    InviteSuppressed {
        invite_id: i64,
        next_possible_at: Timestamp,
    },
}

impl WebhookEvent {
    /// The event a timeline line is, if it is one.
    pub(crate) fn of(line: &TimelineEvent<'_>) -> Option<WebhookEvent> {
        match line {
            TimelineEvent::Activated => Some(WebhookEvent::PatientActivated),
            TimelineEvent::InviteSent {
                invite_id,
                channels,
                attempt,
                ..
            } => Some(WebhookEvent::InviteSent {
                invite_id: *invite_id,
                channels: channels.to_vec(),
                attempt: *attempt,
            }),
            TimelineEvent::InviteFailed {
                invite_id, attempt, ..
            } => Some(WebhookEvent::InviteFailed {
                invite_id: *invite_id,
                attempt: *attempt,
            }),
            TimelineEvent::InviteSuppressed {
                invite_id,
                next_possible_at,
                ..
            } => Some(WebhookEvent::InviteSuppressed {
                invite_id: *invite_id,
                next_possible_at: *next_possible_at,
            }),
            // A trigger (or a go-live run's turn) over the cap writes its
            // invite suppressed at once.
            TimelineEvent::Trigger {
                decision: AutoDecision::Suppressed { next_possible_at },
                invite_id: Some(invite_id),
                ..
            }
            | TimelineEvent::GoLiveInvite {
                decision: AutoDecision::Suppressed { next_possible_at },
                invite_id: Some(invite_id),
                ..
            } => Some(WebhookEvent::InviteSuppressed {
                invite_id: *invite_id,
                next_possible_at: *next_possible_at,
            }),
            _ => None,
        }
    }

    fn event_type(&self) -> WebhookEventType {
        match self {
            WebhookEvent::PatientActivated => WebhookEventType::PatientActivated,
            WebhookEvent::InviteSent { .. } => WebhookEventType::InviteSent,
            WebhookEvent::InviteFailed { .. } => WebhookEventType::InviteFailed,
            WebhookEvent::InviteSuppressed { .. } => WebhookEventType::InviteSuppressed,
        }
    }

    /// The body: the patient by internal id and MRN (what the practice's
    /// EHR matches its chart by) and no other patient data: no name,
    /// date of birth, address, email or phone.
    fn body(&self, envelope: &Envelope<'_>, patient_id: i64, mrn: &str) -> serde_json::Value {
        let mut body = envelope.json();
        body["patient"] = json!({ "id": patient_id, "mrn": mrn });
        match self {
            WebhookEvent::PatientActivated => {}
            WebhookEvent::InviteSent {
                invite_id,
                channels,
                attempt,
            } => {
                body["invite"] =
                    json!({ "id": invite_id, "channels": channels, "attempt": attempt });
            }
            WebhookEvent::InviteFailed { invite_id, attempt } => {
                body["invite"] = json!({ "id": invite_id, "attempts": attempt });
            }
            WebhookEvent::InviteSuppressed {
                invite_id,
                next_possible_at,
            } => {
                body["invite"] = json!({
                    "id": invite_id,
                    "reason": "cap_reached",
                    "next_possible_at": next_possible_at,
                });
            }
        }
        body
    }
}

/// What every event's body starts with.
struct Envelope<'a> {
    id: &'a str,
    event_type: WebhookEventType,
    occurred_at: Timestamp,
    practice: &'a str,
}

impl Envelope<'_> {
    fn json(&self) -> serde_json::Value {
        json!({
            "id": self.id,
            "type": self.event_type.key(),
            "occurred_at": self.occurred_at,
            "practice": self.practice,
        })
    }
}

/// A new row of `webhook_deliveries`, as [`Tx::queue_webhooks`] writes it.
#[derive(Serialize)]
struct QueuedRow {
    event_id: String,
    endpoint_id: i64,
    event_type: &'static str,
    body: String,
}

impl BatchRow for QueuedRow {
    const COLUMNS: &'static [(&'static str, Col)] = &[
        ("event_id", Col::Text),
        ("endpoint_id", Col::Int),
        ("event_type", Col::Text),
        ("body", Col::Text),
    ];
}

/// An enabled endpoint of a patient's practice, read when publishing.
#[derive(sqlx::FromRow)]
struct Subscriber {
    patient_id: i64,
    mrn: String,
    practice_code: String,
    endpoint_id: i64,
    events: String,
}

#[derive(sqlx::FromRow)]
struct EndpointRow {
    id: i64,
    practice_id: i64,
    url: String,
    events: String,
    enabled: bool,
    created_at: i64,
    created_by: String,
}

const ENDPOINT_COLUMNS: &str = "id, practice_id, url, events, enabled, created_at, created_by";

impl EndpointRow {
    fn into_endpoint(self) -> Result<WebhookEndpoint> {
        Ok(WebhookEndpoint {
            events: parse_events(self.id, &self.events)?,
            id: self.id,
            practice_id: self.practice_id,
            url: self.url,
            enabled: self.enabled,
            created_at: from_ms(self.created_at)?,
            created_by: self.created_by,
        })
    }
}

fn parse_events(endpoint_id: i64, events: &str) -> Result<Vec<WebhookEventType>> {
    serde_json::from_str(events)
        .map_err(|e| StoreError::Corrupt(format!("events of webhook endpoint {endpoint_id}: {e}")))
}

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    id: i64,
    event_id: String,
    event_type: String,
    state: String,
    attempts: i64,
    next_attempt_at: i64,
    last_attempt_at: Option<i64>,
    last_status: Option<i64>,
    last_error: Option<String>,
    delivered_at: Option<i64>,
    created_at: i64,
}

impl DeliveryRow {
    fn into_delivery(self) -> Result<WebhookDelivery> {
        let queued = self.state == "queued";
        Ok(WebhookDelivery {
            next_attempt_at: if queued {
                Some(from_ms(self.next_attempt_at)?)
            } else {
                None
            },
            last_attempt_at: opt_from_ms(self.last_attempt_at)?,
            delivered_at: opt_from_ms(self.delivered_at)?,
            created_at: from_ms(self.created_at)?,
            id: self.id,
            event_id: self.event_id,
            event_type: self.event_type,
            state: self.state,
            attempts: self.attempts,
            last_status: self.last_status,
            last_error: self.last_error,
        })
    }
}

#[derive(sqlx::FromRow)]
struct JobRow {
    delivery_id: i64,
    endpoint_id: i64,
    event_id: String,
    event_type: String,
    body: String,
    url: String,
    secret: String,
    attempts: i64,
}

fn new_event_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The audit line of a change to an endpoint: which one and its URL,
/// never the secret; a ping's also names its event.
fn endpoint_audit(
    actor: &str,
    action: &str,
    endpoint: &WebhookEndpoint,
    event_id: Option<&str>,
) -> Audit {
    let mut detail = json!({
        "practice_id": endpoint.practice_id,
        "endpoint_id": endpoint.id,
        "url": endpoint.url,
    });
    if let Some(event_id) = event_id {
        detail["event"] = json!(event_id);
    }
    Audit::new(actor, action, AuditTarget::Practice(endpoint.practice_id))
        .with_detail(detail.to_string())
}

impl Store {
    /// Adds an endpoint to a practice, enabled; audited (`webhook.add`,
    /// its creator the actor) in the same transaction.
    pub async fn add_webhook_endpoint(
        &self,
        new: &NewWebhookEndpoint<'_>,
        now: Timestamp,
    ) -> Result<WebhookEndpoint> {
        let events = serde_json::to_string(new.events)
            .map_err(|e| StoreError::Invalid(format!("webhook events: {e}")))?;
        let sql = format!(
            "INSERT INTO webhook_endpoints (practice_id, url, secret, events, enabled, created_at, \
             created_by) VALUES ($1, $2, $3, $4, TRUE, $5, $6) RETURNING {ENDPOINT_COLUMNS}"
        );
        let mut tx = self.begin_write().await?;
        let row: EndpointRow = on_tx!(&mut tx, c => {
            sqlx::query_as(AssertSqlSafe(sql.as_str()))
                .bind(new.practice_id)
                .bind(new.url)
                .bind(new.secret)
                .bind(&events)
                .bind(to_ms(now))
                .bind(new.created_by)
                .fetch_one(c)
                .await
        })?;
        let endpoint = row.into_endpoint()?;
        let audit = endpoint_audit(new.created_by, "webhook.add", &endpoint, None);
        tx.audit_entry(&audit, now).await?;
        tx.commit().await?;
        Ok(endpoint)
    }

    /// The practice's endpoints, oldest first.
    pub async fn webhook_endpoints(&self, practice_id: i64) -> Result<Vec<WebhookEndpoint>> {
        let sql = format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE practice_id = $1 ORDER BY id"
        );
        let rows: Vec<EndpointRow> = on_pool!(self, pool => {
            sqlx::query_as(AssertSqlSafe(sql.as_str())).bind(practice_id).fetch_all(pool).await
        })?;
        rows.into_iter().map(EndpointRow::into_endpoint).collect()
    }

    /// The endpoint `id` of the practice (none when it belongs to another).
    pub async fn webhook_endpoint(
        &self,
        practice_id: i64,
        id: i64,
    ) -> Result<Option<WebhookEndpoint>> {
        let sql = format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE practice_id = $1 AND id = $2"
        );
        let row: Option<EndpointRow> = on_pool!(self, pool => {
            sqlx::query_as(AssertSqlSafe(sql.as_str())).bind(practice_id).bind(id).fetch_optional(pool).await
        })?;
        row.map(EndpointRow::into_endpoint).transpose()
    }

    /// Turns an endpoint on or off (`webhook.enable` / `webhook.disable`,
    /// audited with the change). While off no new event is queued for it
    /// and what was queued waits; turned on again, that goes out.
    pub async fn set_webhook_endpoint_enabled(
        &self,
        practice_id: i64,
        id: i64,
        enabled: bool,
        actor: &str,
        now: Timestamp,
    ) -> Result<Option<WebhookEndpoint>> {
        let sql = format!(
            "UPDATE webhook_endpoints SET enabled = $3 WHERE practice_id = $1 AND id = $2 \
             RETURNING {ENDPOINT_COLUMNS}"
        );
        let mut tx = self.begin_write().await?;
        let row: Option<EndpointRow> = on_tx!(&mut tx, c => {
            sqlx::query_as(AssertSqlSafe(sql.as_str())).bind(practice_id).bind(id).bind(enabled).fetch_optional(c).await
        })?;
        let Some(endpoint) = row.map(EndpointRow::into_endpoint).transpose()? else {
            return Ok(None);
        };
        let action = if enabled {
            "webhook.enable"
        } else {
            "webhook.disable"
        };
        tx.audit_entry(&endpoint_audit(actor, action, &endpoint, None), now)
            .await?;
        tx.commit().await?;
        Ok(Some(endpoint))
    }

    /// Removes an endpoint and its deliveries (queued ones are not sent),
    /// audited (`webhook.remove`) with the removal; none when the practice
    /// has no such endpoint.
    pub async fn remove_webhook_endpoint(
        &self,
        practice_id: i64,
        id: i64,
        actor: &str,
        now: Timestamp,
    ) -> Result<Option<WebhookEndpoint>> {
        let sql = format!(
            "DELETE FROM webhook_endpoints WHERE practice_id = $1 AND id = $2 \
             RETURNING {ENDPOINT_COLUMNS}"
        );
        let mut tx = self.begin_write().await?;
        let row: Option<EndpointRow> = on_tx!(&mut tx, c => {
            sqlx::query_as(AssertSqlSafe(sql.as_str())).bind(practice_id).bind(id).fetch_optional(c).await
        })?;
        let Some(endpoint) = row.map(EndpointRow::into_endpoint).transpose()? else {
            return Ok(None);
        };
        tx.audit_entry(
            &endpoint_audit(actor, "webhook.remove", &endpoint, None),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(Some(endpoint))
    }

    /// Queues a `webhook.ping` to one endpoint (an administrator trying
    /// it), audited with the event's id; returns the event's id.
    pub async fn queue_webhook_ping(
        &self,
        endpoint: &WebhookEndpoint,
        practice_code: &str,
        actor: &str,
        now: Timestamp,
    ) -> Result<String> {
        let event_id = new_event_id();
        let envelope = Envelope {
            id: &event_id,
            event_type: WebhookEventType::Ping,
            occurred_at: now,
            practice: practice_code,
        };
        let row = QueuedRow {
            event_id: event_id.clone(),
            endpoint_id: endpoint.id,
            event_type: WebhookEventType::Ping.key(),
            body: envelope.json().to_string(),
        };
        let audit = endpoint_audit(actor, "webhook.ping", endpoint, Some(&event_id));
        let mut tx = self.begin_write().await?;
        tx.queue_webhooks(&[row], now).await?;
        tx.audit_entry(&audit, now).await?;
        tx.commit().await?;
        Ok(event_id)
    }

    /// The endpoint's most recent deliveries, newest first.
    pub async fn webhook_deliveries(
        &self,
        endpoint_id: i64,
        limit: i64,
    ) -> Result<Vec<WebhookDelivery>> {
        let rows: Vec<DeliveryRow> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT id, event_id, event_type, state, attempts, next_attempt_at, last_attempt_at, \
                 last_status, last_error, delivered_at, created_at FROM webhook_deliveries \
                 WHERE endpoint_id = $1 ORDER BY id DESC LIMIT $2",
            )
            .bind(endpoint_id)
            .bind(limit)
            .fetch_all(pool)
            .await
        })?;
        rows.into_iter().map(DeliveryRow::into_delivery).collect()
    }

    /// Claims up to `limit` due deliveries of enabled endpoints for
    /// `worker` until `now + lease`, oldest due first, and reads them.
    /// PostgreSQL skips rows another instance is claiming this moment.
    pub async fn claim_due_webhooks(
        &self,
        worker: &str,
        now: Timestamp,
        lease: SignedDuration,
        limit: i64,
    ) -> Result<Vec<WebhookJob>> {
        let lock = self.backend.engine().claim_lock();
        // The endpoints are read in a subquery, not joined, so that
        // PostgreSQL's row locks fall on the deliveries only.
        let claim = format!(
            "UPDATE webhook_deliveries SET claimed_by = $1, claimed_until = $2 WHERE id IN ( \
               SELECT id FROM webhook_deliveries WHERE state = 'queued' AND next_attempt_at <= $3 \
               AND (claimed_until IS NULL OR claimed_until < $3) \
               AND endpoint_id IN (SELECT id FROM webhook_endpoints WHERE enabled) \
               ORDER BY next_attempt_at, id LIMIT $4 {lock}) \
             RETURNING id"
        );
        let until = now.checked_add(lease).unwrap_or(Timestamp::MAX);
        let claimed: Vec<i64> = on_pool!(self, pool => {
            sqlx::query_scalar(AssertSqlSafe(claim.as_str()))
                .bind(worker)
                .bind(to_ms(until))
                .bind(to_ms(now))
                .bind(limit)
                .fetch_all(pool)
                .await
        })?;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        let (ids_match, json) = self.backend.engine().id_list(1, "d.id", claimed)?;
        let read = format!(
            "SELECT d.id AS delivery_id, d.endpoint_id, d.event_id, d.event_type, d.body, e.url, \
             e.secret, d.attempts FROM webhook_deliveries d \
             JOIN webhook_endpoints e ON e.id = d.endpoint_id \
             WHERE {ids_match} AND d.claimed_by = $2 ORDER BY d.next_attempt_at, d.id"
        );
        let rows: Vec<JobRow> = on_pool!(self, pool => {
            sqlx::query_as(AssertSqlSafe(read.as_str())).bind(&json).bind(worker).fetch_all(pool).await
        })?;
        Ok(rows
            .into_iter()
            .map(|row| WebhookJob {
                delivery_id: row.delivery_id,
                endpoint_id: row.endpoint_id,
                event_id: row.event_id,
                event_type: row.event_type,
                body: row.body,
                url: row.url,
                secret: row.secret,
                attempt: row.attempts + 1,
            })
            .collect())
    }

    /// Records what the receiver said (`enroll_core::webhook_outcome`
    /// decides what it comes to) and releases the claim.
    pub async fn finish_webhook(
        &self,
        job: &WebhookJob,
        worker: &str,
        answer: WebhookAnswer<'_>,
        policy: &RetryPolicy,
        jitter: f64,
        now: Timestamp,
    ) -> Result<WebhookFinished> {
        let outcome = enroll_core::webhook_outcome(answer, job.attempt, policy, jitter, now);
        let status = match answer {
            WebhookAnswer::Status(status) => Some(i64::from(status)),
            WebhookAnswer::NoAnswer(_) => None,
        };
        let (state, next_at, delivered_at, error, finished) = match outcome {
            WebhookOutcome::Delivered => (
                "delivered",
                now,
                Some(to_ms(now)),
                None,
                WebhookFinished::Delivered,
            ),
            WebhookOutcome::Retry { at, reason } => (
                "queued",
                at,
                None,
                Some(reason),
                WebhookFinished::Retry { at },
            ),
            WebhookOutcome::Failed { reason } => (
                "failed",
                now,
                None,
                Some(reason.clone()),
                WebhookFinished::Failed { reason },
            ),
        };
        let updated = on_pool!(self, pool => {
            sqlx::query(
                "UPDATE webhook_deliveries SET state = $1, attempts = $2, next_attempt_at = $3, \
                 last_attempt_at = $4, last_status = $5, last_error = $6, delivered_at = $7, \
                 claimed_by = NULL, claimed_until = NULL \
                 WHERE id = $8 AND claimed_by = $9 AND state = 'queued'",
            )
            .bind(state)
            .bind(job.attempt)
            .bind(to_ms(next_at))
            .bind(to_ms(now))
            .bind(status)
            .bind(error)
            .bind(delivered_at)
            .bind(job.delivery_id)
            .bind(worker)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(if updated == 0 {
            WebhookFinished::AlreadyDone
        } else {
            finished
        })
    }
}

impl Tx {
    /// Queues each event for every enabled endpoint of its patient's
    /// practice that subscribed to it. `events` are (patient id, event),
    /// all of the instant `at`; one read and one write whatever their
    /// number, and one read only when no practice has an endpoint.
    pub(crate) async fn publish_webhooks(
        &mut self,
        events: &[(i64, WebhookEvent)],
        at: Timestamp,
    ) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let subscribers = self
            .webhook_subscribers(events.iter().map(|(patient_id, _)| *patient_id))
            .await?;
        if subscribers.is_empty() {
            return Ok(());
        }
        let mut rows = Vec::new();
        for (patient_id, event) in events {
            let event_type = event.event_type();
            let event_id = new_event_id();
            for subscriber in subscribers.get(patient_id).into_iter().flatten() {
                if !parse_events(subscriber.endpoint_id, &subscriber.events)?.contains(&event_type)
                {
                    continue;
                }
                let envelope = Envelope {
                    id: &event_id,
                    event_type,
                    occurred_at: at,
                    practice: &subscriber.practice_code,
                };
                rows.push(QueuedRow {
                    event_id: event_id.clone(),
                    endpoint_id: subscriber.endpoint_id,
                    event_type: event_type.key(),
                    body: event
                        .body(&envelope, *patient_id, &subscriber.mrn)
                        .to_string(),
                });
            }
        }
        self.queue_webhooks(&rows, at).await
    }

    /// The enabled endpoints of the patients' practices, by patient.
    async fn webhook_subscribers(
        &mut self,
        patient_ids: impl IntoIterator<Item = i64>,
    ) -> Result<HashMap<i64, Vec<Subscriber>>> {
        let mut ids: Vec<i64> = patient_ids.into_iter().collect();
        ids.sort_unstable();
        ids.dedup();
        let (ids_match, json) = self.engine().id_list(1, "p.id", ids)?;
        let sql = format!(
            "SELECT p.id AS patient_id, p.mrn, pr.code AS practice_code, e.id AS endpoint_id, \
             e.events FROM patients p JOIN practices pr ON pr.id = p.practice_id \
             JOIN webhook_endpoints e ON e.practice_id = p.practice_id AND e.enabled \
             WHERE {ids_match} ORDER BY e.id"
        );
        let rows: Vec<Subscriber> = on_tx!(self, c => {
            sqlx::query_as(AssertSqlSafe(sql.as_str())).bind(&json).fetch_all(c).await
        })?;
        let mut by_patient: HashMap<i64, Vec<Subscriber>> = HashMap::new();
        for row in rows {
            by_patient.entry(row.patient_id).or_default().push(row);
        }
        Ok(by_patient)
    }

    async fn queue_webhooks(&mut self, rows: &[QueuedRow], at: Timestamp) -> Result<()> {
        self.write_rows(rows, Some(to_ms(at)), |v| {
            format!(
                "INSERT INTO webhook_deliveries (event_id, endpoint_id, event_type, body, state, \
                 attempts, next_attempt_at, created_at) \
                 SELECT v.event_id, v.endpoint_id, v.event_type, v.body, 'queued', 0, $2, $2 \
                 FROM {}",
                v.table()
            )
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::assert_columns;

    #[test]
    fn queued_rows_serialize_to_their_columns() {
        assert_columns(&QueuedRow {
            event_id: "e".into(),
            endpoint_id: 1,
            event_type: "invite.sent",
            body: "{}".into(),
        });
    }

    #[test]
    fn bodies_name_the_patient_by_id_and_mrn_only() {
        let at: Timestamp = "2026-11-25T15:00:00Z"
            .parse()
            .unwrap_or(Timestamp::UNIX_EPOCH);
        let envelope = Envelope {
            id: "0b6f",
            event_type: WebhookEventType::InviteSuppressed,
            occurred_at: at,
            practice: "RIVERSIDE",
        };
        let body = WebhookEvent::InviteSuppressed {
            invite_id: 9,
            next_possible_at: at,
        }
        .body(&envelope, 4, "M-4");
        assert_eq!(
            body,
            json!({
                "id": "0b6f", "type": "invite.suppressed", "occurred_at": "2026-11-25T15:00:00Z",
                "practice": "RIVERSIDE", "patient": { "id": 4, "mrn": "M-4" },
                "invite": { "id": 9, "reason": "cap_reached", "next_possible_at": "2026-11-25T15:00:00Z" },
            })
        );
    }

    #[test]
    fn the_timeline_lines_that_are_events() {
        let at: Timestamp = "2026-11-25T15:00:00Z"
            .parse()
            .unwrap_or(Timestamp::UNIX_EPOCH);
        let suppressed = AutoDecision::Suppressed {
            next_possible_at: at,
        };
        let trigger = enroll_core::Trigger::ChartAdded;
        let over_cap = TimelineEvent::Trigger {
            trigger: &trigger,
            decision: &suppressed,
            invite_id: Some(3),
        };
        assert_eq!(
            WebhookEvent::of(&over_cap),
            Some(WebhookEvent::InviteSuppressed {
                invite_id: 3,
                next_possible_at: at
            })
        );
        assert_eq!(
            WebhookEvent::of(&TimelineEvent::Activated),
            Some(WebhookEvent::PatientActivated)
        );
        assert_eq!(WebhookEvent::of(&TimelineEvent::ChartAdded), None);
        let coalesced = TimelineEvent::Trigger {
            trigger: &trigger,
            decision: &AutoDecision::Coalesced,
            invite_id: None,
        };
        assert_eq!(WebhookEvent::of(&coalesced), None);
    }
}
