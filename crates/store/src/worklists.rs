//! Work lists (the enrollment dashboard's to-do lists): patients missing
//! required fields, with a failed or suppressed latest invite, invited but
//! not active after some days, or opted out; a page at a time, in name
//! order, within the user's practices.

use enroll_core::{Field, PracticeScope};
use jiff::{SignedDuration, Timestamp};
use sqlx::AssertSqlSafe;

use crate::model::{INVITE_COLUMNS, InviteRow, PATIENT_COLUMNS, PatientRow};
use crate::practices::{INVITABLE, blank};
use crate::{Invite, Patient, Result, Store, on_pool, to_ms};

/// Which work list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkList {
    /// Could be invited but for a blank required field.
    MissingFields,
    /// The latest invite failed for good.
    FailedDeliveries,
    /// The latest invite is held by the cap (R7).
    Suppressed,
    /// Sent an invite at least this long ago and still not active.
    NotActiveAfter(SignedDuration),
    /// Opted out of email or of text messages.
    OptedOut,
}

#[derive(Debug, Clone)]
pub struct WorkListQuery {
    pub list: WorkList,
    pub scope: PracticeScope,
    pub limit: i64,
    pub offset: i64,
    pub now: Timestamp,
}

/// One patient of a work list, with the latest invite (for its reason or
/// next possible date).
#[derive(Debug, Clone)]
pub struct WorkListEntry {
    pub patient: Patient,
    pub latest_invite: Option<Invite>,
}

/// A page of a work list and how many patients the whole list has.
#[derive(Debug, Clone)]
pub struct WorkListPage {
    pub entries: Vec<WorkListEntry>,
    pub total: i64,
}

/// The patient's latest invite, joined as `li`.
const LATEST_INVITE: &str =
    "LEFT JOIN invites li ON li.id = (SELECT MAX(i.id) FROM invites i WHERE i.patient_id = p.id)";

impl WorkList {
    /// The list's condition on `patients p` and its latest invite `li`;
    /// `$1` is bound to [`WorkList::bound`].
    fn condition(self) -> String {
        match self {
            WorkList::MissingFields => {
                let any_blank: Vec<String> = Field::REQUIRED.into_iter().map(blank).collect();
                format!("{INVITABLE} AND ({})", any_blank.join(" OR "))
            }
            WorkList::FailedDeliveries => "li.state = 'failed' AND p.activated_at IS NULL".into(),
            WorkList::Suppressed => "li.state = 'suppressed' AND p.activated_at IS NULL".into(),
            WorkList::NotActiveAfter(_) => "p.activated_at IS NULL AND NOT p.deceased \
                 AND p.response IS NULL AND EXISTS (SELECT 1 FROM invites s \
                 WHERE s.patient_id = p.id AND s.state = 'sent' AND s.sent_at <= $1)"
                .into(),
            WorkList::OptedOut => "(p.email_opted_out OR p.sms_opted_out)".into(),
        }
    }

    /// The value of `$1`: the cut-off of "not active after", else unused.
    fn bound(self, now: Timestamp) -> i64 {
        match self {
            WorkList::NotActiveAfter(days) => to_ms(now.checked_sub(days).unwrap_or(now)),
            _ => to_ms(now),
        }
    }
}

impl Store {
    /// One page of a work list, in name order.
    pub async fn work_list(&self, q: &WorkListQuery) -> Result<WorkListPage> {
        // `$1` is in every filter (a list that has no use for it says
        // so): PostgreSQL refuses a bound parameter the query lacks.
        let mut filter = format!(
            "FROM patients p {LATEST_INVITE} WHERE p.merged_into IS NULL \
             AND CAST($1 AS BIGINT) IS NOT NULL AND {}",
            q.list.condition()
        );
        if let Some(ids) = q.scope.ids() {
            if ids.is_empty() {
                return Ok(WorkListPage {
                    entries: Vec::new(),
                    total: 0,
                });
            }
            // Ids are integers we hold, never text from outside: inlined.
            let list: Vec<String> = ids.iter().map(i64::to_string).collect();
            filter.push_str(&format!(" AND p.practice_id IN ({})", list.join(", ")));
        }
        let bound = q.list.bound(q.now);
        let count_sql = format!("SELECT COUNT(*) {filter}");
        let page_sql = format!(
            "SELECT p.id {filter} ORDER BY p.last_name_lc, p.first_name_lc, p.id LIMIT $2 OFFSET $3"
        );
        let total: i64 = on_pool!(self, pool => {
            sqlx::query_scalar(AssertSqlSafe(count_sql.as_str())).bind(bound).fetch_one(pool).await
        })?;
        let ids: Vec<i64> = on_pool!(self, pool => {
            sqlx::query_scalar(AssertSqlSafe(page_sql.as_str()))
                .bind(bound)
                .bind(q.limit.clamp(1, 1000))
                .bind(q.offset.max(0))
                .fetch_all(pool)
                .await
        })?;
        let entries = self.entries_of(&ids).await?;
        Ok(WorkListPage { entries, total })
    }

    /// The patients of `ids` with their latest invites, in the order given.
    pub async fn entries_of(&self, ids: &[i64]) -> Result<Vec<WorkListEntry>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let list: Vec<String> = ids.iter().map(i64::to_string).collect();
        let list = list.join(", ");
        let patients_sql = format!("SELECT {PATIENT_COLUMNS} FROM patients WHERE id IN ({list})");
        let invites_sql = format!(
            "SELECT {INVITE_COLUMNS} FROM invites WHERE id IN \
             (SELECT MAX(id) FROM invites WHERE patient_id IN ({list}) GROUP BY patient_id)"
        );
        let patients: Vec<PatientRow> = on_pool!(self, pool => {
            sqlx::query_as(AssertSqlSafe(patients_sql.as_str())).fetch_all(pool).await
        })?;
        let invites: Vec<InviteRow> = on_pool!(self, pool => {
            sqlx::query_as(AssertSqlSafe(invites_sql.as_str())).fetch_all(pool).await
        })?;
        let mut patients: std::collections::HashMap<i64, Patient> = patients
            .into_iter()
            .map(|row| row.into_patient().map(|p| (p.id, p)))
            .collect::<Result<_>>()?;
        let mut invites: std::collections::HashMap<i64, Invite> = invites
            .into_iter()
            .map(|row| row.into_invite().map(|i| (i.patient_id, i)))
            .collect::<Result<_>>()?;
        Ok(ids
            .iter()
            .filter_map(|id| {
                patients.remove(id).map(|patient| WorkListEntry {
                    latest_invite: invites.remove(id),
                    patient,
                })
            })
            .collect())
    }
}
