//! Before anything leaves: the rules again for a chunk of claimed invites,
//! and the attempts recorded, in one transaction.

use jiff::Timestamp;
use std::collections::HashMap;

use super::decide::Decided;
use super::texts::PlannedTexts;
use super::{DeliveryPolicy, Prepared};
use crate::cap::{CapLedger, ClaimedInvites};
use crate::tx::Tx;
use crate::{Practice, Result, Store, StoreError};

impl Store {
    /// Checks the rules again for a claimed invite and, when it is still to
    /// be sent, records the attempt and returns the job. See the module doc.
    pub async fn prepare_delivery(
        &self,
        invite_id: i64,
        worker: &str,
        policy: &DeliveryPolicy,
        now: Timestamp,
    ) -> Result<Prepared> {
        let mut prepared = self
            .prepare_deliveries(&[invite_id], worker, policy, now)
            .await?;
        Ok(prepared.pop().map_or_else(
            || Prepared::Skipped {
                reason: "no longer claimed by this dispatcher".into(),
            },
            |(_, p)| p,
        ))
    }

    /// [`Store::prepare_delivery`] for several claimed invites in one
    /// transaction, with the writes of all the attempts made together (see
    /// `batch`): a transaction per invite, and a statement per row, were
    /// most of the dispatcher's time. The result is in the order of
    /// `invite_ids`. Patients are locked in ascending id order, so two
    /// dispatchers cannot deadlock on PostgreSQL. Any error rolls the whole
    /// batch back; the caller can then go one by one (see `Dispatcher`), so
    /// that one bad invite does not hold up the others.
    pub async fn prepare_deliveries(
        &self,
        invite_ids: &[i64],
        worker: &str,
        policy: &DeliveryPolicy,
        now: Timestamp,
    ) -> Result<Vec<(i64, Prepared)>> {
        let mut tx = self.begin_write().await?;
        let invites = tx.claimed_invites(invite_ids, worker, now).await?;
        let patients = tx
            .lock_patients(invites.iter().map(|i| i.patient_id).collect())
            .await?;
        let mut chunk = ChunkSoFar {
            texts: PlannedTexts::default(),
            cap: tx
                .cap_ledger(patients.keys().copied(), ClaimedInvites::StillQueued, now)
                .await?,
        };
        let mut practices = PracticeCache::default();
        let mut attempts = Vec::with_capacity(invites.len());
        let mut prepared = Vec::with_capacity(invite_ids.len());
        for invite in &invites {
            let patient = patients
                .get(&invite.patient_id)
                .ok_or(StoreError::NotFound("patient"))?;
            let practice = practices.get(&mut tx, invite.practice_id).await?;
            match tx
                .decide_delivery(invite, patient, practice, policy, &mut chunk, now)
                .await?
            {
                Decided::Attempt(attempt) => attempts.push(*attempt),
                Decided::Skipped(reason) => {
                    prepared.push((invite.id, Prepared::Skipped { reason }));
                }
            }
        }
        let jobs = tx.record_attempts(attempts, policy, now).await?;
        tx.commit().await?;
        prepared.extend(
            jobs.into_iter()
                .map(|job| (job.invite_id, Prepared::Send(job))),
        );
        Ok(in_order_of(invite_ids, prepared))
    }
}

/// `prepared` sorted as `invite_ids`, with the invites that were no longer
/// claimed (absent from `prepared`) skipped.
fn in_order_of(invite_ids: &[i64], prepared: Vec<(i64, Prepared)>) -> Vec<(i64, Prepared)> {
    let mut by_id: HashMap<i64, Prepared> = prepared.into_iter().collect();
    invite_ids
        .iter()
        .map(|&id| {
            let prepared = by_id.remove(&id).unwrap_or_else(|| Prepared::Skipped {
                reason: "no longer claimed by this dispatcher".into(),
            });
            (id, prepared)
        })
        .collect()
}

/// The practices of one batch, read once each.
#[derive(Default)]
struct PracticeCache(HashMap<i64, Practice>);

impl PracticeCache {
    async fn get(&mut self, tx: &mut Tx, practice_id: i64) -> Result<&Practice> {
        Ok(match self.0.entry(practice_id) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
                entry.insert(tx.practice(practice_id).await?)
            }
        })
    }
}

/// What the decisions made so far in one chunk changed, for the next ones:
/// texts planned (R13) and sends counted or uncounted (R7).
pub(super) struct ChunkSoFar {
    pub(super) texts: PlannedTexts,
    pub(super) cap: CapLedger,
}
