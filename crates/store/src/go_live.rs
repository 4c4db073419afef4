//! "Invite existing patients" at go-live (issue #14 item 2): a run lists
//! the practice's eligible charts that were never invited, then releases
//! them one at a time at the administrator's rate, only while the Auto
//! Invite Schedule is open. Each release is one transaction that decides
//! the chart's invite with the rules of this moment (`decide_go_live`:
//! eligibility, R6, R5, R7), so the cap holds and nothing is sent outside
//! office hours; the dispatcher then delivers the invite as any other.
//!
//! Running it twice invites no one twice: a chart with an invite waiting
//! or sent, or already listed by a run, is not listed again.

use enroll_core::{
    AutoDecision, Field, GO_LIVE_TRIGGER, GoLiveChange, GoLiveItemState, GoLiveRunState,
    InviteState, Throttle, decide_go_live,
};
use jiff::Timestamp;
use sqlx::AssertSqlSafe;

use crate::audit::Audit;
use crate::enrollment::NewInvite;
use crate::practices::{INVITABLE, blank};
use crate::timeline::TimelineEvent;
use crate::tx::{Tx, on_tx};
use crate::{Result, Source, Store, StoreError, from_ms, on_pool, to_ms, unique_violation};

/// One run of "Invite existing patients".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoLiveRun {
    pub id: i64,
    pub practice_id: i64,
    pub state: GoLiveRunState,
    pub rate_per_hour: i64,
    pub started_by: String,
    pub created_at: Timestamp,
    pub next_release_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    /// The charts listed when it started.
    pub total: i64,
}

/// Where a run stands: each listed chart is counted once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoLiveProgress {
    pub run: GoLiveRun,
    /// Not released yet.
    pub waiting: i64,
    /// Released; the invite waits for the dispatcher (seconds, normally).
    pub sending: i64,
    pub sent: i64,
    /// Held back by the cap (R7), at its turn or by the dispatcher.
    pub suppressed: i64,
    pub failed: i64,
    /// No longer eligible at its turn, an auto invite already waiting, or
    /// the invite cancelled before it went (activated meanwhile, say).
    pub skipped: i64,
    /// The run was cancelled before its turn.
    pub cancelled: i64,
}

impl GoLiveProgress {
    /// Charts whose turn came (all but the waiting and the cancelled).
    pub fn released(&self) -> i64 {
        self.run.total - self.waiting - self.cancelled
    }
}

#[derive(sqlx::FromRow)]
struct RunRow {
    id: i64,
    practice_id: i64,
    state: String,
    rate_per_hour: i64,
    started_by: String,
    created_at: i64,
    next_release_at: i64,
    finished_at: Option<i64>,
    total: i64,
}

const RUN_COLUMNS: &str = "id, practice_id, state, rate_per_hour, started_by, created_at, \
     next_release_at, finished_at, total";

impl RunRow {
    fn into_run(self) -> Result<GoLiveRun> {
        let state = GoLiveRunState::from_key(&self.state)
            .ok_or_else(|| StoreError::Corrupt(format!("go-live run state {:?}", self.state)))?;
        Ok(GoLiveRun {
            id: self.id,
            practice_id: self.practice_id,
            state,
            rate_per_hour: self.rate_per_hour,
            started_by: self.started_by,
            created_at: from_ms(self.created_at)?,
            next_release_at: from_ms(self.next_release_at)?,
            finished_at: self.finished_at.map(from_ms).transpose()?,
            total: self.total,
        })
    }
}

/// The charts a new run lists: could be invited (the same test as the
/// Integration Tool's readiness count), no required field blank, not
/// merged away, no invite waiting or sent, and not listed by a run that
/// is still to release it or already did.
fn candidates_where() -> String {
    let complete: Vec<String> = Field::REQUIRED
        .into_iter()
        .map(|f| format!("NOT {}", blank(f)))
        .collect();
    let invited = [
        InviteState::Scheduled,
        InviteState::Queued,
        InviteState::Sent,
    ]
    .map(|s| format!("'{}'", s.key()))
    .join(", ");
    let listed = [GoLiveItemState::Waiting, GoLiveItemState::Invited]
        .map(|s| format!("'{}'", s.key()))
        .join(", ");
    format!(
        "p.practice_id = $1 AND p.merged_into IS NULL AND {INVITABLE} AND {} \
         AND NOT EXISTS (SELECT 1 FROM invites i WHERE i.patient_id = p.id AND i.state IN ({invited})) \
         AND NOT EXISTS (SELECT 1 FROM go_live_items g WHERE g.patient_id = p.id AND g.state IN ({listed}))",
        complete.join(" AND ")
    )
}

/// The source recorded on a run's invites and timeline lines: no staff
/// actor (the invite is the run's, not an Enroll Now), the run as reference.
fn run_source(run_id: i64) -> Source {
    Source {
        channel: "go_live".into(),
        reference: Some(format!("run {run_id}")),
        actor: None,
        audit: None,
    }
}

impl Store {
    /// How many charts a run started now would list.
    pub async fn go_live_candidates(&self, practice_id: i64) -> Result<i64> {
        let sql = format!(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM patients p WHERE {}",
            candidates_where()
        );
        Ok(on_pool!(self, pool => {
            sqlx::query_scalar(AssertSqlSafe(sql.as_str())).bind(practice_id).fetch_one(pool).await
        })?)
    }

    /// Starts a run: lists the candidates in chart order, the first due at
    /// once. Refused when a run of the practice is under way, or when no
    /// chart could be listed. `audit` words the started run's audit line,
    /// written in the same transaction.
    pub async fn start_go_live<F>(
        &self,
        practice_id: i64,
        throttle: Throttle,
        started_by: &str,
        audit: F,
        now: Timestamp,
    ) -> Result<GoLiveRun>
    where
        F: FnOnce(&GoLiveRun) -> Audit + Send,
    {
        let mut tx = self.begin_write().await?;
        tx.practice(practice_id).await?;
        let insert = "INSERT INTO go_live_runs (practice_id, state, rate_per_hour, started_by, \
             created_at, next_release_at, total) VALUES ($1, $2, $3, $4, $5, $5, 0) RETURNING id";
        let run_id: std::result::Result<i64, sqlx::Error> = on_tx!(&mut tx, c => {
            sqlx::query_scalar(insert)
                .bind(practice_id)
                .bind(GoLiveRunState::Running.key())
                .bind(i64::from(throttle.rate()))
                .bind(started_by)
                .bind(to_ms(now))
                .fetch_one(c)
                .await
        });
        let run_id = match run_id {
            // The partial unique index decides, so two admins starting at
            // once cannot both succeed.
            Err(e) if unique_violation(&e) => {
                return Err(StoreError::Invalid(
                    "a run of Invite existing patients is already under way for this practice: \
                     let it finish, or cancel it first"
                        .into(),
                ));
            }
            other => other?,
        };
        let list = format!(
            "INSERT INTO go_live_items (run_id, position, patient_id, state) \
             SELECT CAST($2 AS BIGINT), ROW_NUMBER() OVER (ORDER BY p.id), p.id, '{}' FROM patients p WHERE {}",
            GoLiveItemState::Waiting.key(),
            candidates_where()
        );
        let total = on_tx!(&mut tx, c => {
            sqlx::query(AssertSqlSafe(list.as_str()))
                .bind(practice_id)
                .bind(run_id)
                .execute(c)
                .await
                .map(|r| r.rows_affected())
        })?;
        if total == 0 {
            return Err(StoreError::Invalid(
                "no patient can be invited now: every eligible patient was invited already, \
                 or the others miss required fields (see the counts above)"
                    .into(),
            ));
        }
        let total = i64::try_from(total).unwrap_or(i64::MAX);
        on_tx!(&mut tx, c => {
            sqlx::query("UPDATE go_live_runs SET total = $1 WHERE id = $2")
                .bind(total)
                .bind(run_id)
                .execute(c)
                .await
                .map(|r| r.rows_affected())
        })?;
        let run = tx.go_live_run(run_id).await?;
        tx.audit_entry(&audit(&run), now).await?;
        tx.commit().await?;
        Ok(run)
    }

    /// The practice's latest run and where it stands.
    pub async fn go_live_progress(&self, practice_id: i64) -> Result<Option<GoLiveProgress>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM go_live_runs WHERE practice_id = $1 ORDER BY id DESC LIMIT 1"
        );
        let row: Option<RunRow> = on_pool!(self, pool => {
            sqlx::query_as(AssertSqlSafe(sql.as_str())).bind(practice_id).fetch_optional(pool).await
        })?;
        let Some(run) = row.map(RunRow::into_run).transpose()? else {
            return Ok(None);
        };
        let counts: Vec<(String, Option<String>, i64)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT g.state, i.state, CAST(COUNT(*) AS BIGINT) FROM go_live_items g \
                 LEFT JOIN invites i ON i.id = g.invite_id WHERE g.run_id = $1 \
                 GROUP BY g.state, i.state",
            )
            .bind(run.id)
            .fetch_all(pool)
            .await
        })?;
        Ok(Some(progress_of(run, &counts)?))
    }

    /// Pauses, resumes or cancels a run under way. `audit` words the audit
    /// line from the run before and after, written in the same
    /// transaction. Refused (`Invalid`) when the run is not in a state the
    /// change applies to.
    pub async fn change_go_live<F>(
        &self,
        run_id: i64,
        change: GoLiveChange,
        audit: F,
        now: Timestamp,
    ) -> Result<GoLiveRun>
    where
        F: FnOnce(&GoLiveRun, &GoLiveRun) -> Audit + Send,
    {
        let mut tx = self.begin_write().await?;
        let before = tx.locked_run(run_id).await?;
        match change {
            // Releases stop; invites already released still go out.
            GoLiveChange::Pause => {
                let next = before.next_release_at;
                tx.move_run(
                    &before,
                    GoLiveRunState::Running,
                    GoLiveRunState::Paused,
                    next,
                )
                .await?
            }
            // The next chart is due at once.
            GoLiveChange::Resume => {
                tx.move_run(
                    &before,
                    GoLiveRunState::Paused,
                    GoLiveRunState::Running,
                    now,
                )
                .await?
            }
            // Its waiting charts are not invited.
            GoLiveChange::Cancel => tx.cancel_run(&before, now).await?,
        }
        let after = tx.go_live_run(run_id).await?;
        tx.audit_entry(&audit(&before, &after), now).await?;
        tx.commit().await?;
        Ok(after)
    }

    /// Releases the charts whose turn has come in every running run whose
    /// practice's schedule is open at `now`, at most `limit` in all;
    /// returns how many were released. The dispatcher calls this at the
    /// start of each round, so the invites go out in the same round.
    pub async fn release_go_live(&self, now: Timestamp, limit: usize) -> Result<usize> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM go_live_runs WHERE state = $1 AND next_release_at <= $2 ORDER BY id"
        );
        let rows: Vec<RunRow> = on_pool!(self, pool => {
            sqlx::query_as(AssertSqlSafe(sql.as_str()))
                .bind(GoLiveRunState::Running.key())
                .bind(to_ms(now))
                .fetch_all(pool)
                .await
        })?;
        let mut released = 0;
        for row in rows {
            let run = row.into_run()?;
            let Some(practice) = self.practice(run.practice_id).await? else {
                continue;
            };
            if !practice.schedule.is_open(now) {
                continue;
            }
            while released < limit {
                match self.release_one(run.id, &practice.schedule, now).await? {
                    Released::One => released += 1,
                    Released::NotNow => break,
                }
            }
        }
        Ok(released)
    }

    /// One chart's turn, in one transaction: the run is locked and read
    /// again, so instances releasing at once share its rate.
    async fn release_one(
        &self,
        run_id: i64,
        schedule: &enroll_core::ValidSchedule,
        now: Timestamp,
    ) -> Result<Released> {
        let mut tx = self.begin_write().await?;
        let run = tx.locked_run(run_id).await?;
        let throttle = Throttle::per_hour(run.rate_per_hour)
            .map_err(|e| StoreError::Corrupt(format!("go-live run {run_id}: {e}")))?;
        let due = throttle.due(run.next_release_at, now);
        if run.state != GoLiveRunState::Running || due.count == 0 {
            return Ok(Released::NotNow);
        }
        let Some((position, patient_id)) = tx.next_waiting(run_id).await? else {
            tx.end_run(run_id, GoLiveRunState::Finished, now).await?;
            tx.commit().await?;
            return Ok(Released::NotNow);
        };
        let turn = tx.decide_turn(run_id, patient_id, schedule, now).await?;
        let Some(turn) = turn else {
            // The schedule closed in between: the turn waits for it.
            return Ok(Released::NotNow);
        };
        tx.record_turn(run_id, position, &turn, now).await?;
        let next = throttle.next_after(due.from, 1);
        on_tx!(&mut tx, c => {
            sqlx::query("UPDATE go_live_runs SET next_release_at = $1 WHERE id = $2")
                .bind(to_ms(next))
                .bind(run_id)
                .execute(c)
                .await
                .map(|r| r.rows_affected())
        })?;
        if tx.next_waiting(run_id).await?.is_none() {
            tx.end_run(run_id, GoLiveRunState::Finished, now).await?;
        }
        tx.commit().await?;
        Ok(Released::One)
    }
}

enum Released {
    One,
    /// Not due yet, not running, nothing left, or the schedule closed.
    NotNow,
}

/// What a chart's turn came to.
struct Turn {
    state: GoLiveItemState,
    invite_id: Option<i64>,
    note: Option<String>,
}

impl Tx {
    async fn go_live_run(&mut self, run_id: i64) -> Result<GoLiveRun> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM go_live_runs WHERE id = $1");
        let row: Option<RunRow> = on_tx!(self, c => {
            sqlx::query_as(AssertSqlSafe(sql.as_str())).bind(run_id).fetch_optional(c).await
        })?;
        row.ok_or(StoreError::NotFound("go-live run"))?.into_run()
    }

    async fn locked_run(&mut self, run_id: i64) -> Result<GoLiveRun> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM go_live_runs WHERE id = $1 {}",
            self.row_lock()
        );
        let row: Option<RunRow> = on_tx!(self, c => {
            sqlx::query_as(AssertSqlSafe(sql.as_str())).bind(run_id).fetch_optional(c).await
        })?;
        row.ok_or(StoreError::NotFound("go-live run"))?.into_run()
    }

    /// Moves `run` from `from` to `to`, its next release at `next`.
    async fn move_run(
        &mut self,
        run: &GoLiveRun,
        from: GoLiveRunState,
        to: GoLiveRunState,
        next: Timestamp,
    ) -> Result<()> {
        if run.state != from {
            return Err(StoreError::Invalid(format!(
                "this run is {}, not {}",
                run.state.key(),
                from.key()
            )));
        }
        on_tx!(self, c => {
            sqlx::query("UPDATE go_live_runs SET state = $1, next_release_at = $2 WHERE id = $3")
                .bind(to.key())
                .bind(to_ms(next))
                .bind(run.id)
                .execute(c)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(())
    }

    /// Cancels `run` under way: its waiting charts are not invited.
    async fn cancel_run(&mut self, run: &GoLiveRun, now: Timestamp) -> Result<()> {
        if !run.state.is_open() {
            return Err(StoreError::Invalid(format!(
                "this run is already {}",
                run.state.key()
            )));
        }
        on_tx!(self, c => {
            sqlx::query("UPDATE go_live_items SET state = $1, decided_at = $2 WHERE run_id = $3 AND state = $4")
                .bind(GoLiveItemState::Cancelled.key())
                .bind(to_ms(now))
                .bind(run.id)
                .bind(GoLiveItemState::Waiting.key())
                .execute(c)
                .await
                .map(|r| r.rows_affected())
        })?;
        self.end_run(run.id, GoLiveRunState::Cancelled, now).await
    }

    async fn end_run(&mut self, run_id: i64, state: GoLiveRunState, now: Timestamp) -> Result<()> {
        on_tx!(self, c => {
            sqlx::query("UPDATE go_live_runs SET state = $1, finished_at = $2 WHERE id = $3")
                .bind(state.key())
                .bind(to_ms(now))
                .bind(run_id)
                .execute(c)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(())
    }

    async fn next_waiting(&mut self, run_id: i64) -> Result<Option<(i64, i64)>> {
        Ok(on_tx!(self, c => {
            sqlx::query_as(
                "SELECT position, patient_id FROM go_live_items WHERE run_id = $1 AND state = $2 \
                 ORDER BY position LIMIT 1",
            )
            .bind(run_id)
            .bind(GoLiveItemState::Waiting.key())
            .fetch_optional(c)
            .await
        })?)
    }

    /// The rules for the chart at its turn, recorded as a timeline line and,
    /// when sent or capped, an invite. `None` when the schedule says later.
    async fn decide_turn(
        &mut self,
        run_id: i64,
        patient_id: i64,
        schedule: &enroll_core::ValidSchedule,
        now: Timestamp,
    ) -> Result<Option<Turn>> {
        let merged: Option<i64> = on_tx!(self, c => {
            sqlx::query_scalar("SELECT merged_into FROM patients WHERE id = $1")
                .bind(patient_id)
                .fetch_one(c)
                .await
        })?;
        if merged.is_some() {
            return Ok(Some(Turn {
                state: GoLiveItemState::Skipped,
                invite_id: None,
                note: Some("the chart was merged into another".into()),
            }));
        }
        let patient = self.locked_patient(patient_id).await?;
        let facts = patient.facts(schedule.local_date(now));
        let history = self.send_history(patient_id, now).await?;
        let decision = decide_go_live(&facts, schedule, &history, now);
        let (state, new, note) = match &decision {
            AutoDecision::Queue { .. } => return Ok(None),
            AutoDecision::SendNow => (
                GoLiveItemState::Invited,
                Some(NewInvite::auto(InviteState::Queued, GO_LIVE_TRIGGER, now)),
                None,
            ),
            AutoDecision::Suppressed { next_possible_at } => (
                GoLiveItemState::Suppressed,
                Some(NewInvite {
                    next_possible_at: Some(*next_possible_at),
                    ..NewInvite::auto(InviteState::Suppressed, GO_LIVE_TRIGGER, now)
                }),
                Some(format!(
                    "the cap of 4 in 30 days: next possible {next_possible_at}"
                )),
            ),
            AutoDecision::Coalesced => (
                GoLiveItemState::Skipped,
                None,
                Some("an auto invite was already waiting to be sent".to_string()),
            ),
            AutoDecision::NotInvited { reasons } => (
                GoLiveItemState::Skipped,
                None,
                Some(
                    reasons
                        .iter()
                        .map(|r| r.message())
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
            ),
        };
        let source = run_source(run_id);
        let invite_id = match new {
            Some(new) => Some(self.insert_invite(&patient, &new, &source, now).await?.id),
            None => None,
        };
        let line = TimelineEvent::GoLiveInvite {
            run_id,
            decision: &decision,
            invite_id,
        };
        self.timeline(patient_id, now, &line, &source).await?;
        Ok(Some(Turn {
            state,
            invite_id,
            note,
        }))
    }

    async fn record_turn(
        &mut self,
        run_id: i64,
        position: i64,
        turn: &Turn,
        now: Timestamp,
    ) -> Result<()> {
        on_tx!(self, c => {
            sqlx::query(
                "UPDATE go_live_items SET state = $1, invite_id = $2, note = $3, decided_at = $4 \
                 WHERE run_id = $5 AND position = $6",
            )
            .bind(turn.state.key())
            .bind(turn.invite_id)
            .bind(turn.note.as_deref())
            .bind(to_ms(now))
            .bind(run_id)
            .bind(position)
            .execute(c)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(())
    }
}

/// Each (item state, invite state) count in its progress column.
fn progress_of(run: GoLiveRun, counts: &[(String, Option<String>, i64)]) -> Result<GoLiveProgress> {
    let mut p = GoLiveProgress {
        run,
        waiting: 0,
        sending: 0,
        sent: 0,
        suppressed: 0,
        failed: 0,
        skipped: 0,
        cancelled: 0,
    };
    for (item, invite, n) in counts {
        let item = GoLiveItemState::from_key(item)
            .ok_or_else(|| StoreError::Corrupt(format!("go-live item state {item:?}")))?;
        let invite = invite.as_deref().and_then(InviteState::from_key);
        let column = match (item, invite) {
            (GoLiveItemState::Waiting, _) => &mut p.waiting,
            (GoLiveItemState::Cancelled, _) => &mut p.cancelled,
            (GoLiveItemState::Skipped, _) => &mut p.skipped,
            (GoLiveItemState::Suppressed, _) => &mut p.suppressed,
            (GoLiveItemState::Invited, Some(InviteState::Sent)) => &mut p.sent,
            (GoLiveItemState::Invited, Some(InviteState::Failed)) => &mut p.failed,
            (GoLiveItemState::Invited, Some(InviteState::Suppressed)) => &mut p.suppressed,
            (GoLiveItemState::Invited, Some(InviteState::Cancelled)) => &mut p.skipped,
            (GoLiveItemState::Invited, _) => &mut p.sending,
        };
        *column += n;
    }
    Ok(p)
}
