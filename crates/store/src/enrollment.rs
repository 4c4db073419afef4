//! The transactional heart: every write that enforces a rule (R3-R9).
//!
//! Each public operation opens one transaction, locks the patient (SQLite:
//! `BEGIN IMMEDIATE` takes the database write lock; PostgreSQL: `SELECT ...
//! FOR UPDATE` on the patient row), loads what the rules need, asks
//! `enroll_core` for the decision, and records the decision, the invite and
//! the timeline lines before committing. Two requests racing for one patient
//! are therefore serialised, and neither can make a 5th send (R7) or a second
//! queued auto invite (R6).

use enroll_core::{
    AutoDecision, CAP_WINDOW, Demographics, IfKnown, IntakeEvent, ManualDecision, PatientChange,
    PracticeRules, SendHistory, Trigger, changed_required_fields, decide_auto, decide_manual,
};
use jiff::Timestamp;
use sqlx::AssertSqlSafe;

use crate::model::{
    EnrollOutcome, INVITE_COLUMNS, InviteKind, InviteRow, InviteState, PATIENT_COLUMNS,
    PRACTICE_COLUMNS, PatientRow, PracticeRow, TriggerOutcome,
};
use crate::timeline::TimelineEvent;
use crate::tx::{Tx, on_tx};
use crate::{
    AuditTarget, Invite, Patient, Practice, Result, SaveOutcome, Source, Store, StoreError, to_ms,
    unique_violation,
};

/// Binds the demographics' columns in the order the chart's INSERT and
/// UPDATE name them: first and last name, their lowercase forms (for the
/// search indexes), date of birth, birth sex, ZIP, email, cell phone. A
/// macro because the query is one of either engine's types (`on_tx!`).
macro_rules! bind_demographics {
    ($query:expr, $d:expr) => {
        $query
            .bind(&$d.first_name)
            .bind(&$d.last_name)
            .bind($d.first_name.as_deref().map(str::to_lowercase))
            .bind($d.last_name.as_deref().map(str::to_lowercase))
            .bind(&$d.date_of_birth)
            .bind(&$d.birth_sex)
            .bind(&$d.zip)
            .bind(&$d.email)
            .bind(&$d.cell_phone)
    };
}

/// An invite about to be written to the outbox.
pub(crate) struct NewInvite<'a> {
    pub(crate) kind: InviteKind,
    pub(crate) state: InviteState,
    pub(crate) trigger_kind: Option<&'a str>,
    pub(crate) due_at: Timestamp,
    /// Counts toward the cap from now (R7): true for sends, false for an
    /// invite waiting for the schedule or suppressed.
    pub(crate) counted: bool,
    pub(crate) next_possible_at: Option<Timestamp>,
    pub(crate) idempotency_key: Option<&'a str>,
}

impl<'a> NewInvite<'a> {
    pub(crate) fn auto(
        state: InviteState,
        trigger_kind: &'a str,
        due_at: Timestamp,
    ) -> NewInvite<'a> {
        NewInvite {
            kind: InviteKind::Auto,
            state,
            trigger_kind: Some(trigger_kind),
            due_at,
            counted: state == InviteState::Queued,
            next_possible_at: None,
            idempotency_key: None,
        }
    }
}

impl Store {
    /// Creates a patient (chart added, R2 a) and decides its trigger;
    /// `DuplicateMrn` when the MRN is already known in the practice. The
    /// neutral registration that refuses a known MRN, through
    /// [`Store::apply_intake`].
    pub async fn create_patient(
        &self,
        practice_id: i64,
        mrn: &str,
        demographics: &Demographics,
        source: &Source,
        now: Timestamp,
    ) -> Result<SaveOutcome> {
        let event = IntakeEvent::Register {
            patient: PatientChange::replacing(mrn, demographics),
            if_known: IfKnown::Refuse,
        };
        self.apply_intake(practice_id, &event, source, now)
            .await?
            .into_saved()
    }

    /// Updates a known patient by id (the staff pages' forms): its
    /// demographics become `demographics` (a field not given is cleared),
    /// and a change to a required field is a trigger (R2 b). Applied as the
    /// neutral update of the chart's MRN, so a chart merged away updates
    /// the survivor.
    pub async fn update_patient(
        &self,
        patient_id: i64,
        demographics: &Demographics,
        source: &Source,
        now: Timestamp,
    ) -> Result<SaveOutcome> {
        let patient = self
            .patient(patient_id)
            .await?
            .ok_or(StoreError::NotFound("patient"))?;
        let event = IntakeEvent::Update(PatientChange::replacing(&patient.mrn, demographics));
        self.apply_intake(patient.practice_id, &event, source, now)
            .await?
            .into_saved()
    }

    /// A new encounter or appointment (R2 c, d) for a known patient. A
    /// chart merged away (A40) has no history of its own any more, so the
    /// trigger goes to the surviving chart, as an HL7 message naming the
    /// merged MRN does (`patient_id_by_mrn`): the cap (R7) and coalescing
    /// (R6) then count everything the two charts were sent.
    pub async fn record_trigger(
        &self,
        patient_id: i64,
        trigger: Trigger,
        source: &Source,
        now: Timestamp,
    ) -> Result<TriggerOutcome> {
        let mut tx = self.begin_write().await?;
        let patient = tx.locked_survivor(patient_id).await?;
        let practice = tx.practice(patient.practice_id).await?;
        let outcome = tx
            .apply_trigger(&practice, patient.id, trigger, source, now)
            .await?;
        tx.audit_change(source, AuditTarget::Patient(patient.id), now)
            .await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// Enroll Now (R9). With an idempotency key, a repeated request returns
    /// the first request's invite and sends nothing more.
    pub async fn enroll_now(
        &self,
        patient_id: i64,
        idempotency_key: Option<&str>,
        source: &Source,
        now: Timestamp,
    ) -> Result<EnrollOutcome> {
        let mut tx = self.begin_write().await?;
        let patient = tx.locked_patient(patient_id).await?;
        // Its history moved to the survivor: sending from here would start
        // a fresh count of 4 (R7). Nothing is written.
        if let Some(surviving_patient_id) = patient.merged_into {
            tx.audit_change(source, AuditTarget::Patient(patient_id), now)
                .await?;
            tx.commit().await?;
            return Ok(EnrollOutcome::MergedInto {
                surviving_patient_id,
            });
        }
        if let Some(key) = idempotency_key
            && let Some(invite) = tx.invite_by_key(patient_id, key).await?
        {
            tx.audit_change(source, AuditTarget::Patient(patient_id), now)
                .await?;
            tx.commit().await?;
            return Ok(EnrollOutcome::Queued {
                invite,
                replayed: true,
            });
        }
        let practice = tx.practice(patient.practice_id).await?;
        let today = practice.schedule.local_date(now);
        let history = tx.send_history(patient_id, now).await?;
        let outcome = match decide_manual(&patient.facts(today), &history, now) {
            ManualDecision::Refused { refusal } => {
                let refused = TimelineEvent::EnrollNowRefused { refusal: &refusal };
                tx.timeline(patient_id, now, &refused, source).await?;
                EnrollOutcome::Refused { refusal }
            }
            ManualDecision::SendNow => {
                tx.cancel_scheduled(patient_id, "superseded by Enroll Now", source, now)
                    .await?;
                let new = NewInvite {
                    kind: InviteKind::Manual,
                    state: InviteState::Queued,
                    trigger_kind: None,
                    due_at: now,
                    counted: true,
                    next_possible_at: None,
                    idempotency_key,
                };
                let invite = tx.insert_invite(&patient, &new, source, now).await?;
                let queued = TimelineEvent::InviteQueued {
                    invite_id: invite.id,
                    kind: InviteKind::Manual,
                };
                tx.timeline(patient_id, now, &queued, source).await?;
                EnrollOutcome::Queued {
                    invite,
                    replayed: false,
                }
            }
        };
        tx.audit_change(source, AuditTarget::Patient(patient_id), now)
            .await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// Marks the patient active (R10's end): cancels every queued invite.
    /// A patient already active keeps the first activation's time, and no
    /// second `activated` line (nor `patient.activated` webhook) is made.
    pub async fn mark_activated(
        &self,
        patient_id: i64,
        source: &Source,
        now: Timestamp,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        tx.lock_patient(patient_id).await?;
        let newly_active = on_tx!(&mut tx, c => {
            sqlx::query(
                "UPDATE patients SET activated_at = $1, updated_at = $1 \
                 WHERE id = $2 AND activated_at IS NULL",
            )
                .bind(to_ms(now))
                .bind(patient_id)
                .execute(c)
                .await.map(|r| r.rows_affected())
        })?;
        if newly_active == 0 {
            return Ok(());
        }
        tx.timeline(patient_id, now, &TimelineEvent::Activated, source)
            .await?;
        tx.cancel_pending(
            patient_id,
            "the patient activated the portal account",
            source,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// A patient record written by [`Tx::write_loaded_patient`], with the triggers
/// the write raised (not yet decided).
pub(crate) struct WrittenPatient {
    pub patient_id: i64,
    pub created: bool,
    pub triggers: Vec<Trigger>,
}

impl Tx {
    /// Creates the patient (chart added) or replaces the demographics of
    /// `existing` (a trigger when a required field changed, R2), for a
    /// caller that already looked the patient up by MRN and locked it, or
    /// found none.
    pub(crate) async fn write_loaded_patient(
        &mut self,
        practice_id: i64,
        mrn: &str,
        existing: Option<Patient>,
        demographics: &Demographics,
        source: &Source,
        now: Timestamp,
    ) -> Result<WrittenPatient> {
        match existing {
            Some(old) => {
                let id = old.id;
                self.write_demographics(id, demographics, now).await?;
                let fields = changed_required_fields(&old.demographics, demographics);
                let updated = TimelineEvent::DemographicsUpdated {
                    required_fields_changed: &fields,
                };
                self.timeline(id, now, &updated, source).await?;
                let triggers = if fields.is_empty() {
                    vec![]
                } else {
                    vec![Trigger::RequiredFieldsChanged { fields }]
                };
                Ok(WrittenPatient {
                    patient_id: id,
                    created: false,
                    triggers,
                })
            }
            None => {
                let id = self
                    .insert_patient(practice_id, mrn, demographics, now)
                    .await?;
                self.timeline(id, now, &TimelineEvent::ChartAdded, source)
                    .await?;
                Ok(WrittenPatient {
                    patient_id: id,
                    created: true,
                    triggers: vec![Trigger::ChartAdded],
                })
            }
        }
    }

    /// Decides and records each trigger in turn (R3-R8).
    pub(crate) async fn apply_triggers(
        &mut self,
        practice: &Practice,
        patient_id: i64,
        triggers: Vec<Trigger>,
        source: &Source,
        now: Timestamp,
    ) -> Result<Vec<TriggerOutcome>> {
        let mut outcomes = Vec::with_capacity(triggers.len());
        for trigger in triggers {
            outcomes.push(
                self.apply_trigger(practice, patient_id, trigger, source, now)
                    .await?,
            );
        }
        Ok(outcomes)
    }

    /// Serialises writers of one patient. SQLite already holds the database
    /// write lock (`BEGIN IMMEDIATE`); PostgreSQL locks the row.
    pub(crate) async fn lock_patient(&mut self, patient_id: i64) -> Result<()> {
        let sql = format!("SELECT id FROM patients WHERE id = $1 {}", self.row_lock());
        let found: Option<i64> = on_tx!(self, c => {
            sqlx::query_scalar(AssertSqlSafe(sql.as_str())).bind(patient_id).fetch_optional(c).await
        })?;
        found.map(|_| ()).ok_or(StoreError::NotFound("patient"))
    }

    pub(crate) async fn practice(&mut self, practice_id: i64) -> Result<Practice> {
        let row: Option<PracticeRow> = on_tx!(self, c => {
            sqlx::query_as(AssertSqlSafe(format!("SELECT {PRACTICE_COLUMNS} FROM practices WHERE id = $1"))).bind(practice_id).fetch_optional(c).await
        })?;
        row.ok_or(StoreError::NotFound("practice"))?.into_practice()
    }

    /// Locks and reads the chart `patient_id` now lives in: itself, or the
    /// chart an A40 merged it into (a merge points every chart merged
    /// before at the final survivor, so one step is enough). The survivor
    /// is found before it is locked, so this takes no lock a merge (which
    /// locks the survivor first) could wait on; a merge committed between
    /// the read and the lock is followed once more.
    pub(crate) async fn locked_survivor(&mut self, patient_id: i64) -> Result<Patient> {
        let target = self.patient(patient_id).await?.merged_into;
        let locked = self.locked_patient(target.unwrap_or(patient_id)).await?;
        match locked.merged_into {
            Some(survivor) => self.locked_patient(survivor).await,
            None => Ok(locked),
        }
    }

    /// Locks the patient (see [`Tx::lock_patient`]) and reads it, in one
    /// statement.
    pub(crate) async fn locked_patient(&mut self, patient_id: i64) -> Result<Patient> {
        let sql = format!(
            "SELECT {PATIENT_COLUMNS} FROM patients WHERE id = $1 {}",
            self.row_lock()
        );
        let row: Option<PatientRow> = on_tx!(self, c => sqlx::query_as(AssertSqlSafe(sql.as_str())).bind(patient_id).fetch_optional(c).await)?;
        row.ok_or(StoreError::NotFound("patient"))?.into_patient()
    }

    pub(crate) async fn patient(&mut self, patient_id: i64) -> Result<Patient> {
        let sql = format!("SELECT {PATIENT_COLUMNS} FROM patients WHERE id = $1");
        let row: Option<PatientRow> = on_tx!(self, c => sqlx::query_as(AssertSqlSafe(sql.as_str())).bind(patient_id).fetch_optional(c).await)?;
        row.ok_or(StoreError::NotFound("patient"))?.into_patient()
    }

    pub(crate) async fn patient_id_by_mrn(
        &mut self,
        practice_id: i64,
        mrn: &str,
    ) -> Result<Option<i64>> {
        Ok(on_tx!(self, c => {
            // A chart merged away (A40) answers with the surviving one.
            sqlx::query_scalar("SELECT COALESCE(merged_into, id) FROM patients WHERE practice_id = $1 AND mrn = $2")
                .bind(practice_id)
                .bind(mrn)
                .fetch_optional(c)
                .await
        })?)
    }

    pub(crate) async fn insert_patient(
        &mut self,
        practice_id: i64,
        mrn: &str,
        d: &Demographics,
        now: Timestamp,
    ) -> Result<i64> {
        let result: std::result::Result<i64, sqlx::Error> = on_tx!(self, c => {
            let insert = sqlx::query_scalar(
                "INSERT INTO patients (practice_id, mrn, first_name, last_name, first_name_lc, \
                 last_name_lc, date_of_birth, birth_sex, zip, email, cell_phone, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12) RETURNING id",
            )
            .bind(practice_id)
            .bind(mrn);
            bind_demographics!(insert, d)
            .bind(to_ms(now))
            .fetch_one(c)
            .await
        });
        match result {
            Err(e) if unique_violation(&e) => Err(StoreError::DuplicateMrn),
            other => Ok(other?),
        }
    }

    pub(crate) async fn write_demographics(
        &mut self,
        id: i64,
        d: &Demographics,
        now: Timestamp,
    ) -> Result<()> {
        on_tx!(self, c => {
            let update = sqlx::query(
                "UPDATE patients SET first_name = $1, last_name = $2, first_name_lc = $3, \
                 last_name_lc = $4, date_of_birth = $5, birth_sex = $6, zip = $7, email = $8, \
                 cell_phone = $9, updated_at = $10 WHERE id = $11",
            );
            bind_demographics!(update, d)
            .bind(to_ms(now))
            .bind(id)
            .execute(c)
            .await.map(|r| r.rows_affected())
        })?;
        Ok(())
    }

    /// The counted sends of the last 30 days and whether an auto invite is
    /// still waiting (R6, R7).
    pub(crate) async fn send_history(
        &mut self,
        patient_id: i64,
        now: Timestamp,
    ) -> Result<SendHistory> {
        let since = to_ms(now) - CAP_WINDOW.as_millis() as i64;
        // One query for both facts (R7 and R6): each row is a counted send
        // of the window, a waiting auto invite, or both.
        let counted = format!(
            "counted_at > $2 AND state IN ({})",
            InviteState::counted_sql_list()
        );
        let pending = format!(
            "kind = 'auto' AND state IN ({})",
            InviteState::pending_sql_list()
        );
        let sql = format!(
            "SELECT CASE WHEN {counted} THEN counted_at END, {pending} \
             FROM invites WHERE patient_id = $1 AND (({counted}) OR ({pending}))"
        );
        let rows: Vec<(Option<i64>, bool)> = on_tx!(self, c => {
            sqlx::query_as(AssertSqlSafe(sql.as_str()))
            .bind(patient_id)
            .bind(since)
            .fetch_all(c)
            .await
        })?;
        let pending = rows.iter().filter(|(_, pending)| *pending).count();
        let counted: Vec<i64> = rows.iter().filter_map(|(at, _)| *at).collect();
        Ok(SendHistory {
            counted_sends: counted
                .into_iter()
                .map(crate::from_ms)
                .collect::<Result<_>>()?,
            auto_invite_pending: pending > 0,
        })
    }

    /// R3-R8 for one trigger: decide, then record the decision.
    pub(crate) async fn apply_trigger(
        &mut self,
        practice: &Practice,
        patient_id: i64,
        trigger: Trigger,
        source: &Source,
        now: Timestamp,
    ) -> Result<TriggerOutcome> {
        let patient = self.patient(patient_id).await?;
        let facts = patient.facts(practice.schedule.local_date(now));
        let history = self.send_history(patient_id, now).await?;
        let rules = PracticeRules {
            auto_invites_on: practice.auto_invites_on,
            schedule: &practice.schedule,
        };
        let decision = decide_auto(&trigger, &facts, &rules, &history, now);
        let key = trigger.key();
        let new = match &decision {
            AutoDecision::SendNow => Some(NewInvite::auto(InviteState::Queued, key, now)),
            AutoDecision::Queue { at } => Some(NewInvite::auto(InviteState::Scheduled, key, *at)),
            AutoDecision::Suppressed { next_possible_at } => Some(NewInvite {
                next_possible_at: Some(*next_possible_at),
                ..NewInvite::auto(InviteState::Suppressed, key, now)
            }),
            AutoDecision::Coalesced | AutoDecision::NotInvited { .. } => None,
        };
        let invite_id = match new {
            Some(new) => Some(self.insert_invite(&patient, &new, source, now).await?.id),
            None => None,
        };
        let line = TimelineEvent::Trigger {
            trigger: &trigger,
            decision: &decision,
            invite_id,
        };
        self.timeline(patient_id, now, &line, source).await?;
        Ok(TriggerOutcome {
            patient_id,
            trigger,
            decision,
            invite_id,
        })
    }

    pub(crate) async fn insert_invite(
        &mut self,
        patient: &Patient,
        new: &NewInvite<'_>,
        source: &Source,
        now: Timestamp,
    ) -> Result<Invite> {
        let sql = format!(
            "INSERT INTO invites (patient_id, practice_id, kind, state, trigger_kind, created_at, \
             due_at, counted_at, next_possible_at, idempotency_key, actor) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING {INVITE_COLUMNS}"
        );
        let counted_at = new.counted.then(|| to_ms(now));
        let row: InviteRow = on_tx!(self, c => {
            sqlx::query_as(AssertSqlSafe(sql.as_str()))
                .bind(patient.id)
                .bind(patient.practice_id)
                .bind(new.kind.key())
                .bind(new.state.key())
                .bind(new.trigger_kind)
                .bind(to_ms(now))
                .bind(to_ms(new.due_at))
                .bind(counted_at)
                .bind(new.next_possible_at.map(to_ms))
                .bind(new.idempotency_key)
                .bind(&source.actor)
                .fetch_one(c)
                .await
        })?;
        row.into_invite()
    }

    pub(crate) async fn invite_by_key(
        &mut self,
        patient_id: i64,
        key: &str,
    ) -> Result<Option<Invite>> {
        let sql = format!(
            "SELECT {INVITE_COLUMNS} FROM invites WHERE patient_id = $1 AND idempotency_key = $2"
        );
        let row: Option<InviteRow> = on_tx!(self, c => sqlx::query_as(AssertSqlSafe(sql.as_str())).bind(patient_id).bind(key).fetch_optional(c).await)?;
        row.map(InviteRow::into_invite).transpose()
    }

    /// Cancels invites in the given states, with one timeline line each.
    pub(crate) async fn cancel_in_states(
        &mut self,
        patient_id: i64,
        states: &str,
        reason: &str,
        source: &Source,
        now: Timestamp,
    ) -> Result<()> {
        let sql = format!(
            "UPDATE invites SET state = 'cancelled', failure_reason = $1 \
             WHERE patient_id = $2 AND state IN ({states}) RETURNING id"
        );
        let ids: Vec<i64> = on_tx!(self, c => sqlx::query_scalar(AssertSqlSafe(sql.as_str())).bind(reason).bind(patient_id).fetch_all(c).await)?;
        self.note_cancelled(patient_id, &ids, reason, source, now)
            .await
    }

    /// One timeline line per invite just cancelled.
    pub(crate) async fn note_cancelled(
        &mut self,
        patient_id: i64,
        invite_ids: &[i64],
        reason: &str,
        source: &Source,
        now: Timestamp,
    ) -> Result<()> {
        for id in invite_ids {
            let cancelled = TimelineEvent::InviteCancelled {
                invite_id: *id,
                reason,
            };
            self.timeline(patient_id, now, &cancelled, source).await?;
        }
        Ok(())
    }

    pub(crate) async fn cancel_scheduled(
        &mut self,
        patient_id: i64,
        reason: &str,
        source: &Source,
        now: Timestamp,
    ) -> Result<()> {
        self.cancel_in_states(patient_id, "'scheduled'", reason, source, now)
            .await
    }

    pub(crate) async fn cancel_pending(
        &mut self,
        patient_id: i64,
        reason: &str,
        source: &Source,
        now: Timestamp,
    ) -> Result<()> {
        let pending = InviteState::pending_sql_list();
        self.cancel_in_states(patient_id, &pending, reason, source, now)
            .await
    }
}
