//! The rules re-checked for one claimed invite of a locked patient, with
//! the patient's data of this moment (R4-R7).

use enroll_core::{
    AutoDecision, ManualDecision, PracticeRules, SMS_DAY, SendHistory, Trigger, check, decide_auto,
    decide_manual,
};
use jiff::Timestamp;

use super::prepare::ChunkSoFar;
use super::{DeliveryPolicy, system};
use crate::cap::Suppression;
use crate::timeline::TimelineEvent;
use crate::tx::{Tx, on_tx};
use crate::{Invite, InviteState, Patient, Practice, Result, Source};

impl Tx {
    /// Checks the rules again for one claimed invite of a locked patient.
    /// What does not lead to a send now (rescheduled, suppressed, cancelled)
    /// is written here, at once: a later invite of the same patient in the
    /// batch must see it (R6, R7).
    pub(super) async fn decide_delivery(
        &mut self,
        invite: &Invite,
        patient: &Patient,
        practice: &Practice,
        policy: &DeliveryPolicy,
        chunk: &mut ChunkSoFar,
        now: Timestamp,
    ) -> Result<Decided> {
        let ledger = &mut chunk.cap;
        let today = practice.schedule.local_date(now);
        let facts = patient.facts(today);
        let source = system();

        if invite.state == InviteState::Scheduled {
            // An auto invite waiting for the schedule: the whole decision
            // again, as if its trigger happened now (R4-R7), except that it
            // does not coalesce with itself.
            let mut history = self.send_history(patient.id, now).await?;
            history.auto_invite_pending = false;
            let rules = PracticeRules {
                auto_invites_on: practice.auto_invites_on,
                schedule: &practice.schedule,
            };
            let trigger = queued_for(invite);
            match decide_auto(&trigger, &facts, &rules, &history, now) {
                AutoDecision::SendNow => {
                    self.count_now(invite.id, now).await?;
                    ledger.counted(patient.id, invite.id, now);
                }
                AutoDecision::Queue { at } => {
                    self.reschedule(invite.id, at).await?;
                    let rescheduled = TimelineEvent::InviteRescheduled {
                        invite_id: invite.id,
                        due_at: at,
                        reason: None,
                    };
                    self.timeline(patient.id, now, &rescheduled, &source)
                        .await?;
                    return Ok(Decided::Skipped("outside the schedule".into()));
                }
                AutoDecision::Suppressed { next_possible_at } => {
                    return self
                        .held_by_cap(invite, patient, next_possible_at, &source, now)
                        .await;
                }
                AutoDecision::NotInvited { reasons } => {
                    let words: Vec<String> = reasons.iter().map(|r| r.message()).collect();
                    return self.cancel_one(invite, &words.join("; "), now).await;
                }
                // No other auto invite is counted as waiting (above), so the
                // rules do not coalesce this one; should they, it gives way.
                AutoDecision::Coalesced => {
                    return self.cancel_one(invite, "superseded", now).await;
                }
            }
        } else if let ManualDecision::Refused { refusal } =
            decide_manual(&facts, &SendHistory::default(), now)
        {
            // Already counted: first whether the patient may still be
            // invited (activated, opted out, lost a field meanwhile...).
            ledger.uncounted(patient.id, invite.id);
            return self.cancel_one(invite, &refusal.message(), now).await;
        } else if let Some(next_possible_at) = ledger.over_cap(patient.id, invite.id, now) {
            // Then R7 against the whole history: counted when it was queued,
            // but a merge may since have added another chart's sends.
            ledger.uncounted(patient.id, invite.id);
            return self
                .held_by_cap(invite, patient, next_possible_at, &source, now)
                .await;
        }

        let Some(valid) = check(&patient.demographics, today).valid else {
            ledger.uncounted(patient.id, invite.id);
            return self
                .cancel_one(invite, "required fields are missing", now)
                .await;
        };
        let allowed = practice.channels;
        let (email, cell_phone) = self
            .channels(
                &valid,
                &facts,
                allowed.email,
                policy.sms_enabled && allowed.sms,
                &mut chunk.texts,
                now,
            )
            .await?;
        if !allowed.email && (valid.cell_phone.is_none() || facts.sms_opted_out) {
            // The practice texts only, and this chart cannot be texted:
            // waiting would not change that, a new cell phone would (R8).
            ledger.uncounted(patient.id, invite.id);
            return self
                .cancel_one(
                    invite,
                    "this practice invites by text message only and the chart has no cell phone that can take one",
                    now,
                )
                .await;
        }
        if email.is_none() && cell_phone.is_none() {
            // Email opted out and the number has had its texts for now (R13).
            let at = now.checked_add(SMS_DAY).unwrap_or(Timestamp::MAX);
            self.reschedule(invite.id, at).await?;
            let rescheduled = TimelineEvent::InviteRescheduled {
                invite_id: invite.id,
                due_at: at,
                reason: Some("SMS limit for this number"),
            };
            self.timeline(patient.id, now, &rescheduled, &source)
                .await?;
            return Ok(Decided::Skipped("SMS limit".into()));
        }
        Ok(Decided::Attempt(Box::new(Attempt {
            invite: invite.clone(),
            first_name: valid.first_name.as_str().to_string(),
            practice_code: practice.code.clone(),
            practice_name: practice.name.clone(),
            preferred_language: patient.preferred_language.clone(),
            email,
            cell_phone,
        })))
    }

    /// R7 holds the invite back until `next_possible_at`.
    async fn held_by_cap(
        &mut self,
        invite: &Invite,
        patient: &Patient,
        next_possible_at: Timestamp,
        source: &Source,
        now: Timestamp,
    ) -> Result<Decided> {
        let why = Suppression {
            invite_id: invite.id,
            next_possible_at,
            reason: None,
        };
        self.suppress_invite(patient.id, &why, source, now).await?;
        Ok(Decided::Skipped("cap reached".into()))
    }

    async fn count_now(&mut self, invite_id: i64, now: Timestamp) -> Result<()> {
        self.set_invite_at(invite_id, "state = 'queued', counted_at = $1", now)
            .await
    }

    async fn reschedule(&mut self, invite_id: i64, at: Timestamp) -> Result<()> {
        self.set_invite_at(
            invite_id,
            "due_at = $1, claimed_by = NULL, claimed_until = NULL",
            at,
        )
        .await
    }

    async fn cancel_one(
        &mut self,
        invite: &Invite,
        reason: &str,
        now: Timestamp,
    ) -> Result<Decided> {
        on_tx!(self, c => {
            sqlx::query(
                "UPDATE invites SET state = 'cancelled', failure_reason = $1, claimed_by = NULL, \
                 claimed_until = NULL WHERE id = $2",
            )
            .bind(reason)
            .bind(invite.id)
            .execute(c)
            .await
            .map(|r| r.rows_affected())
        })?;
        let cancelled = TimelineEvent::InviteCancelled {
            invite_id: invite.id,
            reason,
        };
        self.timeline(invite.patient_id, now, &cancelled, &system())
            .await?;
        Ok(Decided::Skipped(reason.to_string()))
    }
}

/// The trigger an auto invite was queued for, as the rules take it. Only
/// the kind matters to `decide_auto` today (see its doc), so an invite
/// without one (or with a key this version does not know) is decided as
/// for a chart added, the trigger every patient has.
fn queued_for(invite: &Invite) -> Trigger {
    invite
        .trigger
        .as_deref()
        .and_then(Trigger::from_key)
        .unwrap_or(Trigger::ChartAdded)
}

/// An invite that passed the rules again and goes out now.
pub(super) struct Attempt {
    pub(super) invite: Invite,
    pub(super) first_name: String,
    pub(super) practice_code: String,
    pub(super) practice_name: String,
    pub(super) preferred_language: Option<String>,
    pub(super) email: Option<String>,
    pub(super) cell_phone: Option<String>,
}

pub(super) enum Decided {
    Attempt(Box<Attempt>),
    /// Nothing to send now (rescheduled, suppressed or cancelled: already
    /// written), and why.
    Skipped(String),
}
