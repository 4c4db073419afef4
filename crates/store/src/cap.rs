//! R7 over what the database holds: the counted sends of patients, read
//! once for a batch and weighed by `enroll_core::queued_over_cap`.
//!
//! Every queued invite is counted when it is queued, so a history built by
//! the rules one decision at a time never holds more than 4 in 30 days. A
//! merge of two charts does: each chart kept its own cap. So the merge
//! suppresses the queued invites beyond the cap, and the dispatcher asks
//! again for every queued invite before sending it.

use std::collections::HashMap;

use enroll_core::{CAP_WINDOW, CountedSend, InviteState, queued_over_cap};
use jiff::Timestamp;
use sqlx::AssertSqlSafe;

use crate::timeline::TimelineEvent;
use crate::tx::{Tx, on_tx};
use crate::{Result, Source, from_ms, to_ms};

/// An invite held back by the cap, and until when.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Suppression<'a> {
    pub(crate) invite_id: i64,
    pub(crate) next_possible_at: Timestamp,
    /// Why, when it is not plain R7 (e.g. a merge).
    pub(crate) reason: Option<&'a str>,
}

/// Whether an invite claimed by a live lease is weighed as already handed
/// to a channel: a dispatcher may have it in flight, past its own check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClaimedInvites {
    /// The merge: it cannot stop what a dispatcher is sending.
    HandedOver,
    /// The dispatcher itself: its claims are the invites it is deciding on.
    StillQueued,
}

/// The counted sends of some patients within the last 30 days, kept up to
/// date while one transaction decides on their invites.
#[derive(Debug, Default)]
pub(crate) struct CapLedger(HashMap<i64, Vec<CountedSend>>);

impl CapLedger {
    /// `Some(next_possible_at)` when sending the queued invite now would
    /// break R7 (see `queued_over_cap`); an invite the ledger does not hold
    /// (counted more than 30 days ago) is new to every window and may go.
    pub(crate) fn over_cap(
        &self,
        patient_id: i64,
        invite_id: i64,
        now: Timestamp,
    ) -> Option<Timestamp> {
        let sends = self.0.get(&patient_id)?;
        queued_over_cap(sends, now)
            .into_iter()
            .find(|(id, _)| *id == invite_id)
            .map(|(_, at)| at)
    }

    /// A waiting invite was queued (counted) at `at`.
    pub(crate) fn counted(&mut self, patient_id: i64, invite_id: i64, at: Timestamp) {
        self.0.entry(patient_id).or_default().push(CountedSend {
            invite_id,
            counted_at: at,
            handed_over: false,
        });
    }

    /// A queued invite was suppressed or cancelled: it no longer counts.
    pub(crate) fn uncounted(&mut self, patient_id: i64, invite_id: i64) {
        if let Some(sends) = self.0.get_mut(&patient_id) {
            sends.retain(|s| s.invite_id != invite_id);
        }
    }
}

impl Tx {
    /// The counted sends of `patient_ids` in the 30 days before `now`, in one
    /// statement (`InviteState::counts_toward_cap` decides which).
    pub(crate) async fn cap_ledger(
        &mut self,
        patient_ids: impl IntoIterator<Item = i64>,
        claimed: ClaimedInvites,
        now: Timestamp,
    ) -> Result<CapLedger> {
        let (ids_match, json) = self.id_list("patient_id", patient_ids)?;
        let sql = format!(
            "SELECT patient_id, id, counted_at, (state = 'sent' OR COALESCE(claimed_until, 0) >= $3) \
             FROM invites WHERE {ids_match} AND counted_at > $2 AND state IN ({})",
            InviteState::counted_sql_list()
        );
        let since = to_ms(now) - CAP_WINDOW.as_millis() as i64;
        // A claim counts as handed over only for the merge.
        let live_claims_from = match claimed {
            ClaimedInvites::HandedOver => to_ms(now),
            ClaimedInvites::StillQueued => i64::MAX,
        };
        let persistent = self.keeps_batch_plans();
        let rows: Vec<(i64, i64, i64, bool)> = on_tx!(self, c => {
            sqlx::query_as(AssertSqlSafe(sql.as_str()))
                .persistent(persistent)
                .bind(&json)
                .bind(since)
                .bind(live_claims_from)
                .fetch_all(c)
                .await
        })?;
        let mut ledger = CapLedger::default();
        for (patient_id, invite_id, counted_at, handed_over) in rows {
            ledger.0.entry(patient_id).or_default().push(CountedSend {
                invite_id,
                counted_at: from_ms(counted_at)?,
                handed_over,
            });
        }
        Ok(ledger)
    }

    /// R7 for a history that was combined (a merge): every queued invite of
    /// the patient beyond the cap is suppressed, with the date a send
    /// becomes possible on the timeline.
    pub(crate) async fn suppress_queued_over_cap(
        &mut self,
        patient_id: i64,
        reason: &str,
        source: &Source,
        now: Timestamp,
    ) -> Result<()> {
        let ledger = self
            .cap_ledger([patient_id], ClaimedInvites::HandedOver, now)
            .await?;
        let Some(sends) = ledger.0.get(&patient_id) else {
            return Ok(());
        };
        for (invite_id, next_possible_at) in queued_over_cap(sends, now) {
            let why = Suppression {
                invite_id,
                next_possible_at,
                reason: Some(reason),
            };
            self.suppress_invite(patient_id, &why, source, now).await?;
        }
        Ok(())
    }

    /// Not sent because of the cap (R7): suppressed, released from any
    /// claim, and said on the patient's timeline.
    pub(crate) async fn suppress_invite(
        &mut self,
        patient_id: i64,
        why: &Suppression<'_>,
        source: &Source,
        now: Timestamp,
    ) -> Result<()> {
        let Suppression {
            invite_id,
            next_possible_at,
            reason,
        } = *why;
        let line = TimelineEvent::InviteSuppressed {
            invite_id,
            next_possible_at,
            reason,
        };
        self.timeline(patient_id, now, &line, source).await?;
        self.set_invite_at(
            invite_id,
            "state = 'suppressed', next_possible_at = $1, claimed_by = NULL, claimed_until = NULL",
            next_possible_at,
        )
        .await
    }

    /// `UPDATE invites SET <set> WHERE id = ...` with `at` bound as `$1`:
    /// the outbox's one-invite moves (counted now, rescheduled, suppressed).
    /// `set` is always one of our constant texts, never input.
    pub(crate) async fn set_invite_at(
        &mut self,
        invite_id: i64,
        set: &'static str,
        at: Timestamp,
    ) -> Result<()> {
        let sql = format!("UPDATE invites SET {set} WHERE id = $2");
        on_tx!(self, c => {
            sqlx::query(AssertSqlSafe(sql.as_str()))
                .bind(to_ms(at))
                .bind(invite_id)
                .execute(c)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(())
    }
}
