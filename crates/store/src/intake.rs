//! HL7 v2 intake (DESIGN.md section 3): one transaction per inbound
//! message that stores the raw bytes, applies the event (patient, encounter,
//! appointment, merge, and the triggers of R2 with their decisions) and
//! records the ACK, so that the ACK goes out only once all of it is
//! committed, and a repeated MSH-10 from the same sender is answered with
//! the original ACK without being applied again.
//!
//! The store knows nothing of HL7 syntax: the listener parses and maps the
//! message and hands over the neutral [`IntakeEvent`] (or the problem that
//! stops it), and a closure that builds the ACK for the outcome. The event
//! is applied by [`Tx::apply_intake`] (apply.rs), as every source's is.

use enroll_core::IntakeEvent;
use jiff::Timestamp;
use serde::Serialize;
use sqlx::AssertSqlSafe;

use crate::apply::Applied;
use crate::audit::{Audit, AuditTarget};
use crate::model::{PRACTICE_COLUMNS, PracticeRow};
use crate::tx::{Tx, on_tx};
use crate::{Practice, Result, Source, Store, StoreError, from_ms, on_pool, to_ms};

/// What became of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    /// Applied; answered AA.
    Applied,
    /// Not applied because of its content or our configuration; answered AE.
    Error,
    /// Not understood (unparseable, unsupported type or version); answered AR.
    Rejected,
    /// An MSH-10 already received from the same sender; answered with the
    /// original ACK.
    Duplicate,
}

impl MessageStatus {
    pub fn key(self) -> &'static str {
        match self {
            MessageStatus::Applied => "applied",
            MessageStatus::Error => "error",
            MessageStatus::Rejected => "rejected",
            MessageStatus::Duplicate => "duplicate",
        }
    }

    fn from_key(key: &str) -> Result<MessageStatus> {
        Ok(match key {
            "applied" => MessageStatus::Applied,
            "error" => MessageStatus::Error,
            "rejected" => MessageStatus::Rejected,
            "duplicate" => MessageStatus::Duplicate,
            other => return Err(StoreError::Corrupt(format!("message status {other:?}"))),
        })
    }
}

/// What kind of problem stopped a message: the ACK's ERR code follows from
/// it (the intake builds the ACK; the store only says what it found).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// The parser's own verdict (it knows the code and the place).
    Parse,
    /// A frame that could not be read whole (too large, cut off).
    Unreadable,
    /// A field the rules need is empty (e.g. PID-3, the MRN).
    MissingField,
    /// A value that must name something we know does not (e.g. an MSH-4
    /// sending facility mapped to no practice).
    UnknownValue,
    /// The database refused the message for a reason that trying again
    /// cannot cure (not a lost connection or a busy database): answered AE
    /// and kept for staff, who fix the cause and reprocess it.
    Storage,
}

/// Why a message is not applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IntakeProblem {
    /// `Error` (AE) or `Rejected` (AR).
    pub status: MessageStatus,
    pub kind: ProblemKind,
    /// Where, as `SEG-n` (e.g. `PID-7`), when known.
    pub location: Option<String>,
    /// What is wrong and what to do, in words; never patient data.
    pub reason: String,
}

impl IntakeProblem {
    /// An application error (AE) of `kind` at `location`.
    pub fn error(
        kind: ProblemKind,
        location: Option<&str>,
        reason: impl Into<String>,
    ) -> IntakeProblem {
        IntakeProblem {
            status: MessageStatus::Error,
            kind,
            location: location.map(str::to_string),
            reason: reason.into(),
        }
    }
}

/// One message as received, with what the parser made of it.
#[derive(Debug, Clone)]
pub struct InboundMessage<'a> {
    pub raw: &'a [u8],
    /// The sender's address, e.g. `10.0.0.7:51234`.
    pub peer: Option<String>,
    /// The listener it came in on (`mllp`, `mllp-tls`), for the
    /// Connections page's counts; `None` when it did not come over MLLP.
    pub listener: Option<&'static str>,
    pub received_at: Timestamp,
    /// MSH-3 and MSH-4 (namespace ids); empty when unreadable.
    pub sending_app: String,
    pub sending_facility: String,
    /// MSH-10; empty when unreadable (such a message is never deduplicated).
    pub control_id: String,
    /// MSH-9 as `ADT^A04`.
    pub message_type: String,
    /// False when MSH-10 is not to be trusted for deduplication: it was read
    /// from a header the parser could not read as a whole (an unusable
    /// MSH-2), so the sender's corrected resend with the same control id
    /// must be read afresh, not answered with the first rejection.
    pub deduplicate: bool,
    /// What intake noticed while reading the message that staff should
    /// know (stored with it); the store adds its own, e.g. a NUL it had to
    /// escape.
    pub notes: Option<String>,
    pub parsed: std::result::Result<IntakeEvent, IntakeProblem>,
}

/// What the store did with a message; `ack` is what to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub message_id: i64,
    pub status: MessageStatus,
    pub patient_id: Option<i64>,
    pub duplicate_of: Option<i64>,
    pub ack: String,
}

/// A stored message, for the messages API.
#[derive(Debug, Clone, Serialize)]
pub struct StoredMessage {
    pub id: i64,
    pub received_at: Timestamp,
    pub processed_at: Timestamp,
    pub peer: Option<String>,
    pub sending_app: String,
    pub sending_facility: String,
    pub control_id: String,
    pub message_type: String,
    pub status: MessageStatus,
    pub ack_code: String,
    pub duplicate_of: Option<i64>,
    pub practice_id: Option<i64>,
    pub patient_id: Option<i64>,
    pub error_location: Option<String>,
    pub error: Option<String>,
    pub reprocessed_at: Option<Timestamp>,
    pub reprocessed_by: Option<String>,
    /// What intake had to do to keep the message faithfully (e.g. a NUL in
    /// MSH-10 stored as `\X00\`), in words; `None` when nothing.
    pub notes: Option<String>,
    /// The message as received (raw bytes, shown as text); only in
    /// [`Store::hl7_message`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw: Option<Vec<u8>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ack: Option<String>,
}

/// Filters of the messages list; all optional, newest first.
#[derive(Debug, Clone, Default)]
pub struct MessageQuery {
    pub status: Option<MessageStatus>,
    pub message_type: Option<String>,
    pub control_id: Option<String>,
    pub sending_facility: Option<String>,
    pub patient_id: Option<i64>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    /// Messages with a smaller id (paging backwards).
    pub before_id: Option<i64>,
    pub limit: Option<i64>,
}

/// The setting that maps an MSH-4 sending facility to a practice code.
pub fn facility_setting_key(facility: &str) -> String {
    format!("hl7/facility/{facility}")
}

const MESSAGE_COLUMNS: &str = "id, received_at, processed_at, peer, sending_app, \
    sending_facility, control_id, message_type, status, ack_code, duplicate_of, practice_id, \
    patient_id, error_location, error, reprocessed_at, reprocessed_by, notes";

#[derive(sqlx::FromRow)]
struct MessageRow {
    id: i64,
    received_at: i64,
    processed_at: i64,
    peer: Option<String>,
    sending_app: String,
    sending_facility: String,
    control_id: String,
    message_type: String,
    status: String,
    ack_code: String,
    duplicate_of: Option<i64>,
    practice_id: Option<i64>,
    patient_id: Option<i64>,
    error_location: Option<String>,
    error: Option<String>,
    reprocessed_at: Option<i64>,
    reprocessed_by: Option<String>,
    notes: Option<String>,
}

impl MessageRow {
    fn into_message(self) -> Result<StoredMessage> {
        Ok(StoredMessage {
            id: self.id,
            received_at: from_ms(self.received_at)?,
            processed_at: from_ms(self.processed_at)?,
            peer: self.peer,
            sending_app: self.sending_app,
            sending_facility: self.sending_facility,
            control_id: self.control_id,
            message_type: self.message_type,
            status: MessageStatus::from_key(&self.status)?,
            ack_code: self.ack_code,
            duplicate_of: self.duplicate_of,
            practice_id: self.practice_id,
            patient_id: self.patient_id,
            error_location: self.error_location,
            error: self.error,
            reprocessed_at: self.reprocessed_at.map(from_ms).transpose()?,
            reprocessed_by: self.reprocessed_by,
            notes: self.notes,
            raw: None,
            ack: None,
        })
    }
}

/// The ACK code a status is answered with.
fn ack_code(status: MessageStatus) -> &'static str {
    match status {
        MessageStatus::Applied | MessageStatus::Duplicate => "AA",
        MessageStatus::Error => "AE",
        MessageStatus::Rejected => "AR",
    }
}

/// How often a transaction that lost a race (the same control id or the same
/// new MRN on two connections at once, PostgreSQL) is tried again; the next
/// try sees the winner's row.
pub(crate) const RACE_RETRIES: usize = 3;

/// Runs `attempt` (one transaction) and, when `retry` allows it, again
/// while it loses a race ([`is_race`]), up to [`RACE_RETRIES`] tries.
pub(crate) async fn retry_races<T, F: Future<Output = Result<T>>>(
    retry: bool,
    mut attempt: impl FnMut() -> F,
) -> Result<T> {
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Err(e) if retry && tries < RACE_RETRIES && is_race(&e) => continue,
            other => return other,
        }
    }
}

impl Store {
    /// Stores, deduplicates and applies one inbound message in one
    /// transaction. `ack` builds the answer for the outcome (`None` = AA);
    /// it is stored with the message and returned. An error here means
    /// nothing was committed: answer nothing, so the sender sends again.
    ///
    /// A storage error that is not transient ([`StoreError::is_transient`])
    /// is not returned: the work is rolled back and the message is stored
    /// on its own as an error ([`ProblemKind::Storage`], answered AE), so
    /// the sender is not left resending a message that can never commit.
    pub async fn receive_hl7(
        &self,
        message: &InboundMessage<'_>,
        ack: impl Fn(Option<&IntakeProblem>) -> String,
    ) -> Result<Received> {
        // The columns hold what the database can hold (a NUL as `\X00\`);
        // the key is made from them so a resend finds the first arrival.
        let message = &storable_message(message);
        let dedupe_key = (message.deduplicate && !message.control_id.is_empty()).then(|| {
            format!(
                "{}|{}|{}",
                message.sending_app, message.sending_facility, message.control_id
            )
        });
        let mut tries = 0;
        loop {
            tries += 1;
            match self
                .receive_once(message, dedupe_key.as_deref(), &ack)
                .await
            {
                Err(e) if tries < RACE_RETRIES && is_race(&e) => continue,
                Err(e) if !e.is_transient() => {
                    return self
                        .receive_failed(message, dedupe_key.as_deref(), e, &ack)
                        .await;
                }
                other => return other,
            }
        }
    }

    /// Stores a message whose own transaction failed for good, as an error
    /// row with the raw bytes and the AE that answers it: nothing of it is
    /// applied, staff see it in the messages list and can reprocess it once
    /// the cause is fixed. When even this row cannot be stored, the
    /// original error is returned (the connection closes; the sender
    /// resends).
    async fn receive_failed(
        &self,
        message: &InboundMessage<'_>,
        dedupe_key: Option<&str>,
        error: StoreError,
        ack: &impl Fn(Option<&IntakeProblem>) -> String,
    ) -> Result<Received> {
        let described = crate::describe_storage_error(&error);
        let problem = IntakeProblem::error(
            ProblemKind::Storage,
            None,
            format!(
                "the message could not be stored: {described}; it is kept for staff, who fix the \
                 cause and reprocess it (sending it again changes nothing)"
            ),
        );
        tracing::error!(
            error = %described,
            "an HL7 message was refused by the database; kept as an error for staff"
        );
        let answer = ack(Some(&problem));
        let row = MessageInsert {
            status: MessageStatus::Error,
            dedupe_key,
            duplicate_of: None,
            practice_id: None,
            patient_id: None,
            problem: Some(&problem),
            ack: &answer,
        };
        let stored = async {
            let mut tx = self.begin_write().await?;
            let id = tx
                .insert_message(message, &row, message.received_at)
                .await?;
            self.commit_intake(tx).await?;
            Ok::<_, StoreError>(id)
        }
        .await;
        match stored {
            Ok(id) => Ok(Received {
                message_id: id,
                status: MessageStatus::Error,
                patient_id: None,
                duplicate_of: None,
                ack: answer,
            }),
            // Not even the error row: the database is worse off than one
            // message can tell; answer nothing, as for a transient error.
            Err(_) => Err(error),
        }
    }

    async fn receive_once(
        &self,
        message: &InboundMessage<'_>,
        dedupe_key: Option<&str>,
        ack: &impl Fn(Option<&IntakeProblem>) -> String,
    ) -> Result<Received> {
        let now = message.received_at;
        let mut tx = self.begin_write().await?;
        if let Some(key) = dedupe_key
            && let Some((original, original_ack)) = tx.message_by_dedupe_key(key).await?
        {
            let row = MessageInsert {
                status: MessageStatus::Duplicate,
                dedupe_key: None,
                duplicate_of: Some(original),
                practice_id: None,
                patient_id: None,
                problem: None,
                ack: &original_ack,
            };
            let id = tx.insert_message(message, &row, now).await?;
            self.commit_intake(tx).await?;
            return Ok(Received {
                message_id: id,
                status: MessageStatus::Duplicate,
                patient_id: None,
                duplicate_of: Some(original),
                ack: original_ack,
            });
        }
        let source = Source::new("hl7", None).with_reference(message.control_id.clone());
        let (practice_id, result) = tx.apply_message(message, &source, now).await?;
        let (status, patient_id, problem) = match result {
            Ok(applied) => (MessageStatus::Applied, Some(applied.patient_id), None),
            Err(problem) => (problem.status, None, Some(problem)),
        };
        let answer = ack(problem.as_ref());
        let row = MessageInsert {
            status,
            dedupe_key,
            duplicate_of: None,
            practice_id,
            patient_id,
            problem: problem.as_ref(),
            ack: &answer,
        };
        let id = tx.insert_message(message, &row, now).await?;
        self.commit_intake(tx).await?;
        Ok(Received {
            message_id: id,
            status,
            patient_id,
            duplicate_of: None,
            ack: answer,
        })
    }

    /// Commits an intake transaction. With the `testing` feature a test's
    /// [`crate::testing::IntakeFaults`] act first (hold, or fail: the
    /// transaction is then dropped, which rolls it back).
    async fn commit_intake(&self, tx: Tx) -> Result<()> {
        #[cfg(feature = "testing")]
        if let Some(faults) = &self.intake_faults {
            faults.before_commit().await?;
        }
        tx.commit().await
    }

    /// Applies a stored message again (after staff fixed what stopped it,
    /// e.g. the facility mapping): `message.parsed` is the raw message parsed
    /// anew. Only messages that were not applied (error, rejected) can be;
    /// the row keeps its id and control id and records who reprocessed it.
    pub async fn reprocess_hl7(
        &self,
        message_id: i64,
        message: &InboundMessage<'_>,
        actor: &str,
        now: Timestamp,
        ack: impl Fn(Option<&IntakeProblem>) -> String,
    ) -> Result<StoredMessage> {
        // As on arrival: the control id goes into the timeline's source.
        let message = &storable_message(message);
        let mut tx = self.begin_write().await?;
        let status: Option<String> = on_tx!(&mut tx, c => {
            sqlx::query_scalar("SELECT status FROM hl7_messages WHERE id = $1").bind(message_id).fetch_optional(c).await
        })?;
        match status.as_deref().map(MessageStatus::from_key).transpose()? {
            None => return Err(StoreError::NotFound("message")),
            Some(MessageStatus::Applied | MessageStatus::Duplicate) => {
                return Err(StoreError::Conflict(
                    "this message was already applied (or is a duplicate of one); it is not applied twice",
                ));
            }
            Some(_) => {}
        }
        let source = Source::new("hl7", Some(actor)).with_reference(message.control_id.clone());
        let (practice_id, result) = tx.apply_message(message, &source, now).await?;
        let (status, patient_id, problem) = match result {
            Ok(applied) => (MessageStatus::Applied, Some(applied.patient_id), None),
            Err(problem) => (problem.status, None, Some(problem)),
        };
        let answer = ack(problem.as_ref());
        let reason = problem.as_ref().map(|p| storable(&p.reason));
        let ack = storable(&answer);
        on_tx!(&mut tx, c => {
            sqlx::query(
                "UPDATE hl7_messages SET status = $1, ack_code = $2, practice_id = $3, patient_id = $4, \
                 error_location = $5, error = $6, ack = $7, processed_at = $8, reprocessed_at = $8, \
                 reprocessed_by = $9 WHERE id = $10",
            )
            .bind(status.key())
            .bind(ack_code(status))
            .bind(practice_id)
            .bind(patient_id)
            .bind(problem.as_ref().and_then(|p| p.location.as_deref()))
            .bind(reason.as_deref())
            .bind(ack.as_ref())
            .bind(to_ms(now))
            .bind(actor)
            .bind(message_id)
            .execute(c)
            .await
            .map(|r| r.rows_affected())
        })?;
        let target = AuditTarget::Message {
            id: message_id,
            patient_id,
        };
        tx.audit_entry(&Audit::new(actor, "hl7.message_reprocess", target), now)
            .await?;
        tx.commit().await?;
        self.hl7_message(message_id)
            .await?
            .ok_or(StoreError::NotFound("message"))
    }

    /// Messages matching every given filter, newest first.
    pub async fn hl7_messages(&self, query: &MessageQuery) -> Result<Vec<StoredMessage>> {
        let limit = query.limit.unwrap_or(100).clamp(1, 1000);
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM hl7_messages WHERE \
             (CAST($1 AS TEXT) IS NULL OR status = $1) \
             AND (CAST($2 AS TEXT) IS NULL OR message_type = $2) \
             AND (CAST($3 AS TEXT) IS NULL OR control_id = $3) \
             AND (CAST($4 AS TEXT) IS NULL OR sending_facility = $4) \
             AND (CAST($5 AS BIGINT) IS NULL OR patient_id = $5) \
             AND (CAST($6 AS BIGINT) IS NULL OR received_at >= $6) \
             AND (CAST($7 AS BIGINT) IS NULL OR received_at < $7) \
             AND (CAST($8 AS BIGINT) IS NULL OR id < $8) \
             ORDER BY id DESC LIMIT $9"
        );
        let rows: Vec<MessageRow> = on_pool!(self, pool => {
            sqlx::query_as(AssertSqlSafe(sql.as_str()))
                .bind(query.status.map(MessageStatus::key))
                .bind(query.message_type.as_deref())
                .bind(query.control_id.as_deref())
                .bind(query.sending_facility.as_deref())
                .bind(query.patient_id)
                .bind(query.since.map(to_ms))
                .bind(query.until.map(to_ms))
                .bind(query.before_id)
                .bind(limit)
                .fetch_all(pool)
                .await
        })?;
        rows.into_iter().map(MessageRow::into_message).collect()
    }

    /// One message with its raw bytes and ACK.
    pub async fn hl7_message(&self, id: i64) -> Result<Option<StoredMessage>> {
        let sql = format!("SELECT {MESSAGE_COLUMNS} FROM hl7_messages WHERE id = $1");
        let row: Option<MessageRow> = on_pool!(self, pool => {
            sqlx::query_as(AssertSqlSafe(sql.as_str())).bind(id).fetch_optional(pool).await
        })?;
        let Some(row) = row else { return Ok(None) };
        let mut message = row.into_message()?;
        let (raw, ack): (Vec<u8>, String) = on_pool!(self, pool => {
            sqlx::query_as("SELECT raw, ack FROM hl7_messages WHERE id = $1").bind(id).fetch_one(pool).await
        })?;
        message.raw = Some(raw);
        message.ack = Some(ack);
        Ok(Some(message))
    }

    /// Counts per status, for the Integration Tool and `enroll doctor`.
    pub async fn hl7_message_counts(&self) -> Result<Vec<(String, i64)>> {
        Ok(on_pool!(self, pool => {
            sqlx::query_as("SELECT status, COUNT(*) FROM hl7_messages GROUP BY status ORDER BY status")
                .fetch_all(pool)
                .await
        })?)
    }
}

pub(crate) fn is_race(err: &StoreError) -> bool {
    match err {
        StoreError::DuplicateMrn => true,
        StoreError::Database(e) => crate::unique_violation(e) || crate::lost_lock_race(e),
        _ => false,
    }
}

/// Text as a database column can hold it. PostgreSQL text cannot hold NUL
/// (SQLite can; both are written alike so a message reads the same on
/// either engine): a NUL becomes `\X00\`, the HL7 escape of the same
/// character, which is how a sender could have written it anyway.
fn storable(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        std::borrow::Cow::Owned(text.replace('\0', "\\X00\\"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// The message with its header columns made storable, and a note naming
/// each field that needed it (the raw bytes keep the original).
fn storable_message<'a>(message: &InboundMessage<'a>) -> InboundMessage<'a> {
    let mut notes = Vec::new();
    let mut keep = |text: &str, field: &str| {
        let kept = storable(text);
        if let std::borrow::Cow::Owned(_) = kept {
            notes.push(field.to_string());
        }
        kept.into_owned()
    };
    let mut stored = InboundMessage {
        sending_app: keep(&message.sending_app, "MSH-3"),
        sending_facility: keep(&message.sending_facility, "MSH-4"),
        control_id: keep(&message.control_id, "MSH-10"),
        message_type: keep(&message.message_type, "MSH-9"),
        peer: message
            .peer
            .as_deref()
            .map(|p| keep(p, "the sender's address")),
        ..message.clone()
    };
    if !notes.is_empty() {
        let note = format!(
            "{} held a NUL character (0x00), which a database text column cannot hold; \
             stored as \\X00\\ (the raw message keeps the byte)",
            notes.join(", ")
        );
        stored.notes = Some(match &message.notes {
            Some(theirs) => format!("{}; {note}", storable(theirs)),
            None => note,
        });
    } else {
        stored.notes = message.notes.as_deref().map(|n| storable(n).into_owned());
    }
    stored
}

struct MessageInsert<'a> {
    status: MessageStatus,
    dedupe_key: Option<&'a str>,
    duplicate_of: Option<i64>,
    practice_id: Option<i64>,
    patient_id: Option<i64>,
    problem: Option<&'a IntakeProblem>,
    ack: &'a str,
}

impl Tx {
    async fn message_by_dedupe_key(&mut self, key: &str) -> Result<Option<(i64, String)>> {
        Ok(on_tx!(self, c => {
            sqlx::query_as("SELECT id, ack FROM hl7_messages WHERE dedupe_key = $1")
                .bind(key)
                .fetch_optional(c)
                .await
        })?)
    }

    async fn insert_message(
        &mut self,
        message: &InboundMessage<'_>,
        row: &MessageInsert<'_>,
        now: Timestamp,
    ) -> Result<i64> {
        let reason = row.problem.map(|p| storable(&p.reason));
        let ack = storable(row.ack);
        Ok(on_tx!(self, c => {
            sqlx::query_scalar(
                "INSERT INTO hl7_messages (received_at, processed_at, peer, sending_app, \
                 sending_facility, control_id, message_type, dedupe_key, duplicate_of, practice_id, \
                 patient_id, status, ack_code, error_location, error, raw, ack, notes, listener) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19) \
                 RETURNING id",
            )
            .bind(to_ms(message.received_at))
            .bind(to_ms(now))
            .bind(message.peer.as_deref())
            .bind(&message.sending_app)
            .bind(&message.sending_facility)
            .bind(&message.control_id)
            .bind(&message.message_type)
            .bind(row.dedupe_key)
            .bind(row.duplicate_of)
            .bind(row.practice_id)
            .bind(row.patient_id)
            .bind(row.status.key())
            .bind(ack_code(row.status))
            .bind(row.problem.and_then(|p| p.location.as_deref()))
            .bind(reason.as_deref())
            .bind(message.raw)
            .bind(ack.as_ref())
            .bind(message.notes.as_deref())
            .bind(message.listener)
            .fetch_one(c)
            .await
        })?)
    }

    /// The practice of an MSH-4: the `hl7/facility/<MSH-4>` setting names a
    /// practice code; without one, the practice whose code is MSH-4.
    async fn practice_for_facility(&mut self, facility: &str) -> Result<Option<Practice>> {
        let row: Option<PracticeRow> = on_tx!(self, c => {
            sqlx::query_as(AssertSqlSafe(format!(
                "SELECT {PRACTICE_COLUMNS} FROM practices WHERE code = \
                 COALESCE((SELECT value FROM settings WHERE key = $1), $2)"
            )))
            .bind(facility_setting_key(facility))
            .bind(facility)
            .fetch_optional(c)
            .await
        })?;
        row.map(PracticeRow::into_practice).transpose()
    }

    /// Routes and applies a message; returns the practice (when found) and
    /// the patient or the problem.
    async fn apply_message(
        &mut self,
        message: &InboundMessage<'_>,
        source: &Source,
        now: Timestamp,
    ) -> Result<(Option<i64>, Applied)> {
        let event = match &message.parsed {
            Ok(event) => event,
            Err(problem) => return Ok((None, Err(problem.clone()))),
        };
        let Some(practice) = self
            .practice_for_facility(&message.sending_facility)
            .await?
        else {
            let facility = &message.sending_facility;
            let problem = IntakeProblem::error(
                ProblemKind::UnknownValue,
                Some("MSH-4"),
                format!(
                    "the sending facility {facility:?} is not mapped to a practice: create a \
                     practice with the code {facility:?} or set {:?} to a practice code, then \
                     reprocess this message",
                    facility_setting_key(facility)
                ),
            );
            return Ok((None, Err(problem)));
        };
        let applied = self.apply_intake(&practice, event, source, now).await?;
        Ok((Some(practice.id), applied))
    }
}

/// What the Integration Tool shows of one MLLP listener's intake: its
/// newest message and its messages by ACK code since two instants (today,
/// this week).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IntakeActivity {
    /// The listener's name (`mllp`, `mllp-tls`); `None` for messages that
    /// name none (stored before listeners were recorded).
    pub listener: Option<String>,
    pub last_received_at: Option<Timestamp>,
    /// (ACK code, since the first instant, since the second instant).
    pub by_ack_code: Vec<(String, i64, i64)>,
}

impl Store {
    /// [`IntakeActivity`] of each of `listeners`, in that order, since
    /// `today` and `week` (`today` is the later); then the messages of the
    /// week that name no listener, when there are any.
    pub async fn intake_activity(
        &self,
        listeners: &[&str],
        today: Timestamp,
        week: Timestamp,
    ) -> Result<Vec<IntakeActivity>> {
        let rows: Vec<(Option<String>, String, i64, i64)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT listener, ack_code, CAST(SUM(CASE WHEN received_at >= $1 THEN 1 ELSE 0 END) AS BIGINT), \
                 CAST(COUNT(*) AS BIGINT) FROM hl7_messages WHERE received_at >= $2 \
                 GROUP BY listener, ack_code ORDER BY listener, ack_code",
            )
            .bind(to_ms(today))
            .bind(to_ms(week))
            .fetch_all(pool)
            .await
        })?;
        let counts_of = |listener: Option<&str>| -> Vec<(String, i64, i64)> {
            rows.iter()
                .filter(|(l, ..)| l.as_deref() == listener)
                .map(|(_, code, today, week)| (code.clone(), *today, *week))
                .collect()
        };
        let mut activity = Vec::new();
        for &listener in listeners {
            // One index lookup each (hl7_messages_listener), not a scan.
            let last: Option<i64> = on_pool!(self, pool => {
                sqlx::query_scalar("SELECT MAX(received_at) FROM hl7_messages WHERE listener = $1")
                    .bind(listener)
                    .fetch_one(pool)
                    .await
            })?;
            activity.push(IntakeActivity {
                listener: Some(listener.to_string()),
                last_received_at: last.map(from_ms).transpose()?,
                by_ack_code: counts_of(Some(listener)),
            });
        }
        let unnamed = counts_of(None);
        if !unnamed.is_empty() {
            activity.push(IntakeActivity {
                listener: None,
                last_received_at: None,
                by_ack_code: unnamed,
            });
        }
        Ok(activity)
    }
}
