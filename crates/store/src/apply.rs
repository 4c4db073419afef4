//! One neutral intake event ([`enroll_core::IntakeEvent`]) applied with
//! its source recorded: the patient (registered, updated, merged), the
//! encounter or appointment, and the triggers of R2 with their decisions.
//! Every source goes through [`Tx::apply_intake`]: an HL7 message inside
//! its message transaction (`Store::receive_hl7`, `Store::reprocess_hl7`,
//! with the raw bytes and the ACK), the JSON API and the CLI through
//! [`Store::apply_intake`] in a transaction of its own.

use enroll_core::{
    AppointmentStatus, ChartFlags, Demographics, IfKnown, IntakeEvent, PatientChange,
    PatientResponse, Trigger,
};
use jiff::Timestamp;
use sqlx::AssertSqlSafe;

use crate::enrollment::WrittenPatient;
use crate::intake::{IntakeProblem, ProblemKind, retry_races};
use crate::timeline::{AppointmentChange, TimelineEvent};
use crate::tx::{Tx, on_tx};
use crate::{AuditTarget, Practice, Result, SaveOutcome, Source, Store, StoreError, to_ms};

/// What became of an event given to [`Store::apply_intake`].
// One is returned per call and none is kept in bulk: boxing the larger
// variant would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum IntakeOutcome {
    /// Applied and committed: the patient as it now is (for a merge, the
    /// survivor), whether the event added the chart, and what each
    /// trigger it raised led to (R2-R8).
    Applied(SaveOutcome),
    /// Refused for its content (e.g. no MRN): nothing was written.
    Refused(IntakeProblem),
}

impl IntakeOutcome {
    /// The outcome of an event that was applied; a refused one as
    /// [`StoreError::Invalid`] with its reason, for callers that checked
    /// what the store refuses (a blank MRN) before they called.
    pub fn into_saved(self) -> Result<SaveOutcome> {
        match self {
            IntakeOutcome::Applied(saved) => Ok(saved),
            IntakeOutcome::Refused(problem) => Err(StoreError::Invalid(problem.reason)),
        }
    }
}

/// What [`Tx::apply_intake`] wrote: the patient, whether the event added
/// it, and the triggers' outcomes.
#[derive(Debug, Clone)]
pub(crate) struct AppliedEvent {
    pub(crate) patient_id: i64,
    pub(crate) created: bool,
    pub(crate) triggers: Vec<crate::TriggerOutcome>,
}

/// The outcome of applying one event: what was written, or why nothing.
pub(crate) type Applied = std::result::Result<AppliedEvent, IntakeProblem>;

impl Store {
    /// Applies one intake event to the practice in a transaction of its
    /// own, recording `source` on every timeline line (R2: "each trigger is
    /// recorded with its source"). The way the JSON API, the CLI and next
    /// FHIR and CSV import write a patient; HL7 does the same inside its
    /// message transaction ([`Store::receive_hl7`]).
    ///
    /// `NotFound("practice")` for an unknown practice; `DuplicateMrn` for a
    /// registration with [`IfKnown::Refuse`] of a known MRN (nothing is
    /// written). A registration that updates when known is tried again when
    /// it lost a race to add the same MRN, as an HL7 message is.
    pub async fn apply_intake(
        &self,
        practice_id: i64,
        event: &IntakeEvent,
        source: &Source,
        now: Timestamp,
    ) -> Result<IntakeOutcome> {
        let retry = event.if_known() == IfKnown::Update;
        retry_races(retry, move || async move {
            let mut tx = self.begin_write().await?;
            let practice = tx.practice(practice_id).await?;
            let applied = match tx.apply_intake(&practice, event, source, now).await? {
                Ok(applied) => applied,
                // Nothing was written; dropping the transaction rolls it back.
                Err(problem) => return Ok(IntakeOutcome::Refused(problem)),
            };
            // The chart written (a merged chart's survivor), as the audit's target.
            tx.audit_change(source, AuditTarget::Patient(applied.patient_id), now)
                .await?;
            // Read in the transaction, so the answer is the record as written.
            let patient = tx.patient(applied.patient_id).await?;
            tx.commit().await?;
            Ok(IntakeOutcome::Applied(SaveOutcome {
                patient,
                created: applied.created,
                triggers: applied.triggers,
            }))
        })
        .await
    }
}

/// One event of a batch given to [`Store::apply_intake_batch`].
#[derive(Debug, Clone, Copy)]
pub struct IntakeItem<'a> {
    pub practice_id: i64,
    pub event: &'a IntakeEvent,
    pub source: &'a Source,
}

/// What became of a batch: every event applied, or none.
#[derive(Debug, Clone)]
pub enum BatchOutcome {
    /// All applied and committed, in order.
    Applied(Vec<SaveOutcome>),
    /// The event at `index` was refused for its content: nothing of the
    /// batch was written.
    Refused {
        index: usize,
        problem: IntakeProblem,
    },
}

impl Store {
    /// Applies `items` in order in one transaction, as [`Store::apply_intake`]
    /// applies one (timeline, triggers, audit lines): a FHIR transaction
    /// Bundle is all or nothing. An error (a duplicate MRN, an unknown
    /// practice) or a refused event writes nothing of the batch; a batch
    /// that lost a race to add an MRN it updates when known is tried again.
    pub async fn apply_intake_batch(
        &self,
        items: &[IntakeItem<'_>],
        now: Timestamp,
    ) -> Result<BatchOutcome> {
        let retryable = items.iter().any(|i| i.event.if_known() == IfKnown::Update);
        retry_races(retryable, || self.apply_intake_batch_once(items, now)).await
    }

    async fn apply_intake_batch_once(
        &self,
        items: &[IntakeItem<'_>],
        now: Timestamp,
    ) -> Result<BatchOutcome> {
        let mut tx = self.begin_write().await?;
        let mut practices: Vec<Practice> = Vec::new();
        let mut written = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let practice = match practices.iter().find(|p| p.id == item.practice_id) {
                Some(known) => known.clone(),
                None => {
                    let loaded = tx.practice(item.practice_id).await?;
                    practices.push(loaded.clone());
                    loaded
                }
            };
            let applied = match tx
                .apply_intake(&practice, item.event, item.source, now)
                .await?
            {
                Ok(applied) => applied,
                // Dropping the transaction rolls back the whole batch.
                Err(problem) => return Ok(BatchOutcome::Refused { index, problem }),
            };
            tx.audit_change(item.source, AuditTarget::Patient(applied.patient_id), now)
                .await?;
            written.push(applied);
        }
        let mut saved = Vec::with_capacity(written.len());
        for applied in written {
            saved.push(SaveOutcome {
                patient: tx.patient(applied.patient_id).await?,
                created: applied.created,
                triggers: applied.triggers,
            });
        }
        tx.commit().await?;
        Ok(BatchOutcome::Applied(saved))
    }
}

impl Tx {
    /// Applies one event to `practice` in this transaction: a merge first
    /// (so the update that follows lands on the survivor), then the
    /// patient, then the encounter or appointment, then each trigger's
    /// decision (R3-R8). `Ok(Err(problem))` writes nothing.
    pub(crate) async fn apply_intake(
        &mut self,
        practice: &Practice,
        event: &IntakeEvent,
        source: &Source,
        now: Timestamp,
    ) -> Result<Applied> {
        let patient = event.patient();
        if patient.mrn.trim().is_empty() {
            // Named as HL7 names it: its ACK's ERR points at the field;
            // other sources read the reason.
            return Ok(Err(IntakeProblem::error(
                ProblemKind::MissingField,
                Some("PID-3"),
                "the patient has no medical record number (PID-3 in HL7)",
            )));
        }
        if let IntakeEvent::Merge { merged_mrn, .. } = event {
            self.merge_charts(practice, &patient.mrn, merged_mrn, source, now)
                .await?;
        }
        let written = self
            .save_change(practice, patient, event.if_known(), source, now)
            .await?;
        let mut triggers = written.triggers;
        if let Some(trigger) = self
            .record_visit(practice, written.patient_id, event, source, now)
            .await?
        {
            triggers.push(trigger);
        }
        let triggers = self
            .apply_triggers(practice, written.patient_id, triggers, source, now)
            .await?;
        Ok(Ok(AppliedEvent {
            patient_id: written.patient_id,
            created: written.created,
            triggers,
        }))
    }

    /// Records the encounter or appointment an event carries; the trigger
    /// when it is new (R2 c, d: a new encounter, a new booking).
    async fn record_visit(
        &mut self,
        practice: &Practice,
        patient_id: i64,
        event: &IntakeEvent,
        source: &Source,
        now: Timestamp,
    ) -> Result<Option<Trigger>> {
        Ok(match event {
            IntakeEvent::Encounter {
                visit_number,
                patient_class,
                admitted_at,
                ..
            } => self
                .insert_encounter(
                    practice.id,
                    patient_id,
                    visit_number,
                    patient_class.as_deref(),
                    admitted_at.as_deref(),
                    source,
                    now,
                )
                .await?
                .then_some(Trigger::NewEncounter),
            IntakeEvent::Appointment {
                appointment_id,
                status,
                starts_at,
                ..
            } => {
                let new = self
                    .record_appointment(
                        practice.id,
                        patient_id,
                        appointment_id,
                        *status,
                        starts_at.as_deref(),
                        source,
                        now,
                    )
                    .await?;
                (new && *status == AppointmentStatus::Booked).then_some(Trigger::NewAppointment)
            }
            IntakeEvent::Register { .. } | IntakeEvent::Update(_) | IntakeEvent::Merge { .. } => {
                None
            }
        })
    }

    /// Writes what the event says about the patient (an update overlays
    /// the fields it sent) before any trigger is decided, so that a
    /// deceased flag in the same event stops the invite.
    async fn save_change(
        &mut self,
        practice: &Practice,
        change: &PatientChange,
        if_known: IfKnown,
        source: &Source,
        now: Timestamp,
    ) -> Result<WrittenPatient> {
        let existing = match self.patient_id_by_mrn(practice.id, &change.mrn).await? {
            Some(_) if if_known == IfKnown::Refuse => return Err(StoreError::DuplicateMrn),
            Some(id) => Some(self.locked_patient(id).await?),
            None => None,
        };
        let sends_nothing = change.sent == Demographics::default() && change.cleared.is_empty();
        let written = match existing {
            // An event that names a known chart by its MRN alone (a FHIR
            // Encounter or Appointment, an HL7 visit with an empty PID)
            // leaves the chart as it is: no write, no empty "demographics
            // updated" line on the timeline.
            Some(ours) if sends_nothing => WrittenPatient {
                patient_id: ours.id,
                created: false,
                triggers: Vec::new(),
            },
            existing => {
                let demographics = match &existing {
                    Some(ours) => ours.demographics.overlaid(&change.sent, &change.cleared),
                    None => change.sent.clone(),
                }
                .normalized();
                self.write_loaded_patient(
                    practice.id,
                    &change.mrn,
                    existing,
                    &demographics,
                    source,
                    now,
                )
                .await?
            }
        };
        let id = written.patient_id;
        if let Some(language) = &change.preferred_language {
            on_tx!(self, c => {
                sqlx::query("UPDATE patients SET preferred_language = $1 WHERE id = $2")
                    .bind(language).bind(id).execute(c).await.map(|r| r.rows_affected())
            })?;
        }
        if change.deceased {
            self.mark_deceased(id, source, now).await?;
        }
        Ok(written)
    }

    /// The source says the patient died: recorded once, and whatever is
    /// pending is cancelled (R4).
    async fn mark_deceased(&mut self, id: i64, source: &Source, now: Timestamp) -> Result<()> {
        let newly: u64 = on_tx!(self, c => {
            sqlx::query("UPDATE patients SET deceased = TRUE WHERE id = $1 AND NOT deceased")
                .bind(id).execute(c).await.map(|r| r.rows_affected())
        })?;
        if newly > 0 {
            self.timeline(id, now, &TimelineEvent::Deceased, source)
                .await?;
            self.cancel_pending(id, "the patient is deceased", source, now)
                .await?;
        }
        Ok(())
    }

    /// True when the visit number is new to the practice.
    #[allow(clippy::too_many_arguments)]
    async fn insert_encounter(
        &mut self,
        practice_id: i64,
        patient_id: i64,
        visit_number: &str,
        patient_class: Option<&str>,
        admitted_at: Option<&str>,
        source: &Source,
        now: Timestamp,
    ) -> Result<bool> {
        let inserted: Option<i64> = on_tx!(self, c => {
            sqlx::query_scalar(
                "INSERT INTO encounters (practice_id, patient_id, visit_number, patient_class, admitted_at, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (practice_id, visit_number) DO NOTHING RETURNING id",
            )
            .bind(practice_id)
            .bind(patient_id)
            .bind(visit_number)
            .bind(patient_class)
            .bind(admitted_at)
            .bind(to_ms(now))
            .fetch_optional(c)
            .await
        })?;
        if let Some(encounter_id) = inserted {
            let encounter = TimelineEvent::Encounter {
                encounter_id,
                visit_number,
            };
            self.timeline(patient_id, now, &encounter, source).await?;
        }
        Ok(inserted.is_some())
    }

    /// Records a booking or a change; true when the appointment is new.
    #[allow(clippy::too_many_arguments)]
    async fn record_appointment(
        &mut self,
        practice_id: i64,
        patient_id: i64,
        appointment_id: &str,
        status: AppointmentStatus,
        starts_at: Option<&str>,
        source: &Source,
        now: Timestamp,
    ) -> Result<bool> {
        let existing: Option<i64> = on_tx!(self, c => {
            sqlx::query_scalar("SELECT id FROM appointments WHERE practice_id = $1 AND appointment_id = $2")
                .bind(practice_id).bind(appointment_id).fetch_optional(c).await
        })?;
        let new = existing.is_none();
        if new {
            on_tx!(self, c => {
                sqlx::query(
                    "INSERT INTO appointments (practice_id, patient_id, appointment_id, status, starts_at, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $6)",
                )
                .bind(practice_id).bind(patient_id).bind(appointment_id).bind(status.key())
                .bind(starts_at).bind(to_ms(now))
                .execute(c).await.map(|r| r.rows_affected())
            })?;
        } else if status != AppointmentStatus::Booked {
            on_tx!(self, c => {
                sqlx::query(
                    "UPDATE appointments SET status = $1, starts_at = COALESCE($2, starts_at), updated_at = $3 \
                     WHERE practice_id = $4 AND appointment_id = $5",
                )
                .bind(status.key()).bind(starts_at).bind(to_ms(now)).bind(practice_id).bind(appointment_id)
                .execute(c).await.map(|r| r.rows_affected())
            })?;
        }
        let change = match (new, status) {
            (true, AppointmentStatus::Booked) => AppointmentChange::Booked,
            (false, AppointmentStatus::Booked) => AppointmentChange::Repeated,
            (_, AppointmentStatus::Rescheduled) => AppointmentChange::Rescheduled,
            (_, AppointmentStatus::Modified) => AppointmentChange::Modified,
            (_, AppointmentStatus::Cancelled) => AppointmentChange::Cancelled,
        };
        let line = TimelineEvent::Appointment {
            change,
            appointment_id,
            starts_at,
        };
        self.timeline(patient_id, now, &line, source).await?;
        Ok(new)
    }

    /// A40. Both charts known: the merged one's invites, deliveries,
    /// activation links, encounters, appointments and messages move to the
    /// survivor (so R7 counts both histories), its flags are combined in the
    /// safe direction (an opt-out or a death on either stays), and it points
    /// at the survivor. Only the merged chart known: it takes the surviving
    /// MRN. Neither known: the update that follows adds the chart.
    async fn merge_charts(
        &mut self,
        practice: &Practice,
        surviving_mrn: &str,
        merged_mrn: &str,
        source: &Source,
        now: Timestamp,
    ) -> Result<()> {
        let survivor = self.patient_id_by_mrn(practice.id, surviving_mrn).await?;
        let merged = self.patient_id_by_mrn(practice.id, merged_mrn).await?;
        match (survivor, merged) {
            (Some(survivor), Some(merged)) if survivor != merged => {
                let survivor_flags = self.locked_patient(survivor).await?.chart_flags();
                let merged_flags = self.locked_patient(merged).await?.chart_flags();
                // R10: the merged chart's links stop working.
                self.revoke_tokens(merged, now).await?;
                self.move_history(merged, survivor).await?;
                let combined = enroll_core::merged_flags(survivor_flags, merged_flags);
                self.set_chart_flags(survivor, &combined).await?;
                let merged_here = TimelineEvent::ChartMerged {
                    merged_patient_id: merged,
                };
                self.timeline(survivor, now, &merged_here, source).await?;
                let merged_away = TimelineEvent::MergedInto {
                    surviving_patient_id: survivor,
                };
                self.timeline(merged, now, &merged_away, source).await?;
                self.coalesce_pending(survivor, source, now).await?;
                // Each chart kept its own 4 in 30 days; together they may
                // hold more: the queued invites beyond the cap wait (R7).
                self.suppress_queued_over_cap(
                    survivor,
                    "the cap of 4 sends in 30 days counts both charts since they were merged",
                    source,
                    now,
                )
                .await?;
            }
            (None, Some(merged)) => {
                self.lock_patient(merged).await?;
                on_tx!(self, c => {
                    sqlx::query("UPDATE patients SET mrn = $1, updated_at = $2 WHERE id = $3")
                        .bind(surviving_mrn).bind(to_ms(now)).bind(merged)
                        .execute(c).await.map(|r| r.rows_affected())
                })?;
                self.timeline(merged, now, &TimelineEvent::MrnChanged, source)
                    .await?;
            }
            _ => {}
        }
        Ok(())
    }

    /// The merged chart's rows go to the survivor, and the merged chart
    /// (and any chart merged into it before) points at the survivor.
    async fn move_history(&mut self, from: i64, to: i64) -> Result<()> {
        self.rename_conflicting_keys(from, to).await?;
        for table in [
            "invites",
            "deliveries",
            "activation_tokens",
            "encounters",
            "appointments",
            "hl7_messages",
        ] {
            let sql = format!("UPDATE {table} SET patient_id = $1 WHERE patient_id = $2");
            on_tx!(self, c => {
                sqlx::query(AssertSqlSafe(sql.as_str())).bind(to).bind(from).execute(c).await.map(|r| r.rows_affected())
            })?;
        }
        on_tx!(self, c => {
            sqlx::query("UPDATE patients SET merged_into = $1 WHERE id = $2 OR merged_into = $2")
                .bind(to).bind(from).execute(c).await.map(|r| r.rows_affected())
        })?;
        Ok(())
    }

    /// Idempotency keys are unique per patient, so two charts may each hold
    /// an invite with the same key (one client, one key, two charts). Both
    /// invites are kept, since both were requested and both count toward
    /// the survivor's cap (R7): the merged chart's copy is renamed
    /// `merged-<invite id>:<key>` (invite ids are unique, so the new key
    /// is too), and the key on the survivor still replays the survivor's
    /// own invite. Keys that do not clash move unchanged.
    async fn rename_conflicting_keys(&mut self, from: i64, to: i64) -> Result<()> {
        on_tx!(self, c => {
            sqlx::query(
                "UPDATE invites SET idempotency_key = \
                 'merged-' || CAST(id AS TEXT) || ':' || idempotency_key \
                 WHERE patient_id = $1 AND idempotency_key IN \
                 (SELECT idempotency_key FROM invites WHERE patient_id = $2 \
                  AND idempotency_key IS NOT NULL)",
            )
            .bind(from)
            .bind(to)
            .execute(c)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(())
    }

    /// Writes the flags a merge combined (`enroll_core::merged_flags`).
    async fn set_chart_flags(&mut self, patient_id: i64, flags: &ChartFlags) -> Result<()> {
        on_tx!(self, c => {
            sqlx::query(
                "UPDATE patients SET activated_at = $1, deceased = $2, email_opted_out = $3, \
                 sms_opted_out = $4, response = $5, preferred_language = $6 WHERE id = $7",
            )
            .bind(flags.activated_at.map(to_ms))
            .bind(flags.deceased)
            .bind(flags.email_opted_out)
            .bind(flags.sms_opted_out)
            .bind(flags.response.map(PatientResponse::key))
            .bind(flags.preferred_language.as_deref())
            .bind(patient_id)
            .execute(c)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(())
    }

    /// R6 after a merge: at most one auto invite waits; the earliest stays.
    async fn coalesce_pending(
        &mut self,
        patient_id: i64,
        source: &Source,
        now: Timestamp,
    ) -> Result<()> {
        let reason = "coalesced with the other chart's invite when the charts were merged";
        // Every waiting auto invite but the one due first.
        let cancelled: Vec<i64> = on_tx!(self, c => {
            sqlx::query_scalar(
                "UPDATE invites SET state = 'cancelled', failure_reason = $1 \
                 WHERE patient_id = $2 AND kind = 'auto' AND state IN ('scheduled', 'queued') \
                 AND id <> (SELECT id FROM invites WHERE patient_id = $2 AND kind = 'auto' \
                   AND state IN ('scheduled', 'queued') ORDER BY due_at, id LIMIT 1) \
                 RETURNING id",
            )
            .bind(reason)
            .bind(patient_id)
            .fetch_all(c)
            .await
        })?;
        self.note_cancelled(patient_id, &cancelled, reason, source, now)
            .await?;
        Ok(())
    }
}
