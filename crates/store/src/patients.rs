//! Reading patients, their invites and their timeline.

use std::collections::HashMap;

use enroll_core::{
    CAP_WINDOW, FieldProblem, InviteSummary, NameMatch, StaffStatus, check, sends_in_window,
    staff_status,
};
use jiff::Timestamp;
use serde::Serialize;
use sqlx::AssertSqlSafe;

use crate::engine::Engine;
use crate::model::{INVITE_COLUMNS, InviteRow, PATIENT_COLUMNS, PatientRow, TimelineRow};
use crate::{
    Invite, InviteState, Patient, PatientSearch, Practice, Result, Store, StoreError,
    TimelineEntry, on_pool, to_ms,
};

/// Search results are capped so a one-letter search stays cheap.
const MAX_SEARCH_RESULTS: i64 = 200;

/// Below this many patients with a first name starting with a prefix, a
/// way of matching that uses it is searched through the first-name index
/// and sorted; at or above it, in name order with the limit (see
/// [`SearchFilter::sql`]).
const RARE_FIRST_NAMES: i64 = 2_000;

impl Store {
    pub async fn patient(&self, id: i64) -> Result<Option<Patient>> {
        let sql = format!("SELECT {PATIENT_COLUMNS} FROM patients WHERE id = $1");
        let row: Option<PatientRow> = on_pool!(self, pool => sqlx::query_as(AssertSqlSafe(sql.as_str())).bind(id).fetch_optional(pool).await)?;
        row.map(PatientRow::into_patient).transpose()
    }

    /// Patients matching every part of the search, within the searcher's
    /// practices, ordered by last then first name.
    pub async fn search_patients(&self, search: &PatientSearch) -> Result<Vec<Patient>> {
        let mut rare_first_names = Vec::new();
        if let Some(name) = search.terms.name.as_ref().filter(|_| !narrowed(search)) {
            for way in name.ways() {
                rare_first_names.push(match way.first {
                    Some(prefix) => self.first_name_prefix_is_rare(prefix).await?,
                    None => false,
                });
            }
        }
        let Some(filter) = SearchFilter::of(search, &rare_first_names) else {
            return Ok(Vec::new());
        };
        let engine = self.backend.engine();
        let sql = filter.sql(
            search.limit.unwrap_or(50).clamp(1, MAX_SEARCH_RESULTS),
            engine,
        );
        let rows: Vec<PatientRow> = on_pool!(self, pool => {
            let mut query = sqlx::query_as(AssertSqlSafe(sql.as_str()))
                .persistent(engine.keeps_search_plans());
            for value in &filter.binds {
                query = query.bind(value);
            }
            query.fetch_all(pool).await
        })?;
        rows.into_iter().map(PatientRow::into_patient).collect()
    }

    /// Whether fewer than [`RARE_FIRST_NAMES`] patients have a first name
    /// starting with `prefix` (any practice: this only chooses how to
    /// search). Counting stops there, so the question costs at most that
    /// many index entries.
    async fn first_name_prefix_is_rare(&self, prefix: &str) -> Result<bool> {
        let mut probe = SearchFilter::default();
        let range = probe.prefix("first_name_lc", prefix);
        let sql = format!(
            "SELECT COUNT(*) FROM (SELECT 1 FROM patients WHERE merged_into IS NULL AND {range} \
             LIMIT {RARE_FIRST_NAMES}) AS probe"
        );
        let count: i64 = on_pool!(self, pool => {
            let mut query = sqlx::query_scalar(AssertSqlSafe(sql.as_str()));
            for value in &probe.binds {
                query = query.bind(value);
            }
            query.fetch_one(pool).await
        })?;
        Ok(count < RARE_FIRST_NAMES)
    }

    pub async fn patient_invites(&self, patient_id: i64) -> Result<Vec<Invite>> {
        let sql = format!("SELECT {INVITE_COLUMNS} FROM invites WHERE patient_id = $1 ORDER BY id");
        let rows: Vec<InviteRow> = on_pool!(self, pool => sqlx::query_as(AssertSqlSafe(sql.as_str())).bind(patient_id).fetch_all(pool).await)?;
        rows.into_iter().map(InviteRow::into_invite).collect()
    }

    pub async fn patient_timeline(&self, patient_id: i64) -> Result<Vec<TimelineEntry>> {
        let rows: Vec<TimelineRow> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT id, at, kind, detail, source, reference, actor FROM timeline \
                 WHERE patient_id = $1 OR patient_id IN (SELECT id FROM patients WHERE merged_into = $1) \
                 ORDER BY id",
            )
            .bind(patient_id)
            .fetch_all(pool)
            .await
        })?;
        rows.into_iter().map(TimelineRow::into_entry).collect()
    }

    /// The status staff see (R14), computed from the record and its invites.
    pub async fn patient_status(&self, patient: &Patient, now: Timestamp) -> Result<StaffStatus> {
        let practice = self
            .practice(patient.practice_id)
            .await?
            .ok_or(StoreError::NotFound("practice"))?;
        let invites = self.patient_invites(patient.id).await?;
        Ok(status_of(patient, &practice, &invites, now))
    }

    /// The status staff see (R14) of each of `patients`, by patient id: one
    /// query for all their invites, for a page of search results.
    pub async fn patient_statuses(
        &self,
        patients: &[Patient],
        now: Timestamp,
    ) -> Result<HashMap<i64, StaffStatus>> {
        if patients.is_empty() {
            return Ok(HashMap::new());
        }
        let practices: HashMap<i64, Practice> = self
            .practices()
            .await?
            .into_iter()
            .map(|p| (p.id, p))
            .collect();
        // Ids are integers we hold, never text from outside: inlined.
        let ids: Vec<String> = patients.iter().map(|p| p.id.to_string()).collect();
        let sql = format!(
            "SELECT {INVITE_COLUMNS} FROM invites WHERE patient_id IN ({}) ORDER BY id",
            ids.join(", ")
        );
        let rows: Vec<InviteRow> = on_pool!(self, pool => sqlx::query_as(AssertSqlSafe(sql.as_str())).fetch_all(pool).await)?;
        let mut invites: HashMap<i64, Vec<Invite>> = HashMap::new();
        for row in rows {
            let invite = row.into_invite()?;
            invites.entry(invite.patient_id).or_default().push(invite);
        }
        let mut statuses = HashMap::with_capacity(patients.len());
        for patient in patients {
            let practice = practices
                .get(&patient.practice_id)
                .ok_or(StoreError::NotFound("practice"))?;
            let theirs = invites.get(&patient.id).map(Vec::as_slice).unwrap_or(&[]);
            statuses.insert(patient.id, status_of(patient, practice, theirs, now));
        }
        Ok(statuses)
    }

    /// Everything staff see when they open a chart, assembled once for the
    /// JSON API and the staff pages: the record, its status (R14), the
    /// fields missing or invalid (R1, R11), its invites and its timeline.
    /// `None` when there is no such patient.
    pub async fn chart(&self, patient_id: i64, now: Timestamp) -> Result<Option<Chart>> {
        let Some(patient) = self.patient(patient_id).await? else {
            return Ok(None);
        };
        let practice = self
            .practice(patient.practice_id)
            .await?
            .ok_or(StoreError::NotFound("practice"))?;
        let invites = self.patient_invites(patient.id).await?;
        let timeline = self.patient_timeline(patient.id).await?;
        let today = practice.schedule.local_date(now);
        Ok(Some(Chart {
            status: status_of(&patient, &practice, &invites, now),
            problems: check(&patient.demographics, today).problems,
            patient,
            invites,
            timeline,
        }))
    }

    /// Counts patients, for `enroll doctor` and the demo.
    pub async fn count_patients(&self) -> Result<i64> {
        Ok(
            on_pool!(self, pool => sqlx::query_scalar("SELECT COUNT(*) FROM patients").fetch_one(pool).await)?,
        )
    }

    /// Invites in a state, oldest due first (work lists; the dispatcher).
    pub async fn invites_in_state(
        &self,
        state: crate::InviteState,
        limit: i64,
    ) -> Result<Vec<Invite>> {
        let sql = format!(
            "SELECT {INVITE_COLUMNS} FROM invites WHERE state = $1 ORDER BY due_at, id LIMIT $2"
        );
        let rows: Vec<InviteRow> = on_pool!(self, pool => sqlx::query_as(AssertSqlSafe(sql.as_str())).bind(state.key()).bind(limit).fetch_all(pool).await)?;
        rows.into_iter().map(InviteRow::into_invite).collect()
    }

    /// Sends counted toward the cap at or after `since`, all patients (tests, dashboards).
    pub async fn counted_sends_since(&self, patient_id: i64, since: Timestamp) -> Result<i64> {
        let sql = format!(
            "SELECT COUNT(*) FROM invites WHERE patient_id = $1 AND counted_at >= $2 \
             AND state IN ({})",
            InviteState::counted_sql_list()
        );
        Ok(on_pool!(self, pool => {
            sqlx::query_scalar(AssertSqlSafe(sql.as_str()))
            .bind(patient_id)
            .bind(to_ms(since))
            .fetch_one(pool)
            .await
        })?)
    }
}

/// A chart as staff see it (see [`Store::chart`]).
#[derive(Debug, Clone, Serialize)]
pub struct Chart {
    pub patient: Patient,
    pub status: StaffStatus,
    /// Every problem of R1, blocking or not.
    pub problems: Vec<FieldProblem>,
    /// Oldest first.
    pub invites: Vec<Invite>,
    /// Oldest first, with the lines of charts merged into this one.
    pub timeline: Vec<TimelineEntry>,
}

/// R14 for a patient whose practice and invites (oldest first) are in hand.
fn status_of(
    patient: &Patient,
    practice: &Practice,
    invites: &[Invite],
    now: Timestamp,
) -> StaffStatus {
    let counted: Vec<Timestamp> = invites
        .iter()
        .filter(|i| i.counts_toward_cap())
        .filter_map(|i| i.counted_at)
        .filter(|t| *t > now - CAP_WINDOW)
        .collect();
    let latest = invites.last().map(|i| InviteSummary {
        state: i.state.key().to_string(),
        created_at: i.created_at,
        failure_reason: i.failure_reason.clone(),
        next_possible_at: i.next_possible_at,
    });
    staff_status(
        &patient.facts(practice.schedule.local_date(now)),
        practice.auto_invites_on,
        latest.as_ref(),
        sends_in_window(&counted, now),
    )
}

impl Invite {
    /// R7 (defined by `InviteState::counts_toward_cap`).
    pub fn counts_toward_cap(&self) -> bool {
        self.counted_at.is_some() && self.state.counts_toward_cap()
    }
}

/// A search as SQL: the conditions every result meets, one more set per
/// way the name can match, and the text values they bind ($1, $2, ...: both
/// engines number them the same way, and a number used twice binds once).
#[derive(Default)]
struct SearchFilter {
    conditions: String,
    /// One entry per way the typed name can match (one without conditions
    /// when no name was typed).
    ways: Vec<Way>,
    binds: Vec<String>,
}

/// Whether the search says more than a name (a date of birth, an MRN, a
/// phone number or an email), each of which has its own index.
fn narrowed(search: &PatientSearch) -> bool {
    let terms = &search.terms;
    terms.dob.is_some() || terms.mrn.is_some() || terms.phone.is_some() || terms.email.is_some()
}

/// The conditions of one way a typed name can match, and how to read it.
struct Way {
    conditions: String,
    read: WayRead,
}

enum WayRead {
    /// In name order from the last-name index, up to the limit: quick when
    /// matches are common, even across a long range of last names.
    InNameOrder,
    /// Every match, sorted afterwards: from the first-name index when its
    /// first-name prefix is rare, or from the index of a date of birth,
    /// MRN, phone or email typed with the name.
    Whole,
    /// No name was typed: the planner picks the index (MRN, DOB, ...).
    NoName,
}

/// Name order, and the order of the last-name index (0010), so a way read
/// in name order stops at the limit.
const NAME_ORDER: &str = "ORDER BY last_name_lc, first_name_lc, id";

impl SearchFilter {
    /// `None` when the searcher may see no practice at all.
    fn of(search: &PatientSearch, rare_first_names: &[bool]) -> Option<SearchFilter> {
        let mut filter = SearchFilter::default();
        let terms = &search.terms;
        let ways = match &terms.name {
            None => vec![Way {
                conditions: String::new(),
                read: WayRead::NoName,
            }],
            Some(name) => name
                .ways()
                .iter()
                .zip(rare_first_names.iter().chain(std::iter::repeat(&false)))
                .map(|(way, rare)| {
                    // A date of birth, an MRN, a phone or an email leaves a
                    // handful of patients: the planner reads its index and
                    // the name only filters them.
                    let read = match *rare || narrowed(search) {
                        true => WayRead::Whole,
                        false => WayRead::InNameOrder,
                    };
                    Way {
                        conditions: filter.way(way, &read),
                        read,
                    }
                })
                .collect(),
        };
        filter.ways = ways;
        if let Some(dob) = terms.dob {
            let p = filter.bind(dob.to_string());
            filter.and(format!("date_of_birth = {p}"));
        }
        match (&terms.mrn, &terms.phone) {
            (Some(mrn), Some(phone)) => {
                let (m, p) = (filter.bind(mrn.clone()), filter.bind(phone.clone()));
                filter.and(format!("(mrn = {m} OR cell_phone = {p})"));
            }
            (Some(mrn), None) => {
                let m = filter.bind(mrn.clone());
                filter.and(format!("mrn = {m}"));
            }
            (None, Some(phone)) => {
                let p = filter.bind(phone.clone());
                filter.and(format!("cell_phone = {p}"));
            }
            (None, None) => {}
        }
        if let Some(email) = &terms.email {
            let e = filter.bind(email.clone());
            filter.and(format!("lower(email) = {e}"));
        }
        // Ids are integers we hold, never text from outside: inlined.
        if let Some(id) = search.practice_id {
            filter.and(format!("practice_id = {id}"));
        }
        if let Some(ids) = search.scope.ids() {
            let list: Vec<String> = ids.iter().map(i64::to_string).collect();
            if list.is_empty() {
                return None;
            }
            filter.and(format!("practice_id IN ({})", list.join(", ")));
        }
        Some(filter)
    }

    /// One way alone is one query. Several ways are each searched on their
    /// own and then put together: an OR of the ways would make both
    /// engines gather every match (25,000 patients for "smi" in a million)
    /// and sort them to keep fifty. A way read in name order stops at the
    /// limit, which is quick when matches are common and a long read of
    /// the range when they are rare ("smi" as a first name: every "ma..."
    /// last name is read to find none). So a way whose first-name prefix
    /// is rare is read whole from the first-name index (fewer than
    /// [`RARE_FIRST_NAMES`] rows), and the outer query sorts.
    fn sql(&self, limit: i64, engine: Engine) -> String {
        let matching = |way: &Way| {
            let hint = match way.read {
                WayRead::InNameOrder => engine.name_order_hint(),
                WayRead::Whole | WayRead::NoName => "",
            };
            format!(
                "FROM patients {hint} WHERE merged_into IS NULL{}{}",
                way.conditions, self.conditions
            )
        };
        if let [way] = self.ways.as_slice()
            && !matches!(way.read, WayRead::Whole)
        {
            return format!(
                "SELECT {PATIENT_COLUMNS} {} {NAME_ORDER} LIMIT {limit}",
                matching(way)
            );
        }
        let each_way: Vec<String> = self
            .ways
            .iter()
            .enumerate()
            .map(|(i, way)| match way.read {
                WayRead::Whole => format!("SELECT id {}", matching(way)),
                WayRead::InNameOrder | WayRead::NoName => format!(
                    "SELECT id FROM (SELECT id {} {NAME_ORDER} LIMIT {limit}) AS way{i}",
                    matching(way)
                ),
            })
            .collect();
        format!(
            "SELECT {PATIENT_COLUMNS} FROM patients WHERE id IN ({}) {NAME_ORDER} LIMIT {limit}",
            each_way.join(" UNION ")
        )
    }

    fn bind(&mut self, value: String) -> String {
        self.binds.push(value);
        format!("${}", self.binds.len())
    }

    fn and(&mut self, condition: String) {
        self.conditions.push_str(" AND ");
        self.conditions.push_str(&condition);
    }

    /// The conditions of one way a name matches. Name words are prefixes of
    /// the lowercase name columns. The parser keeps only letters,
    /// apostrophes and hyphens, so no LIKE wildcard typed by the user can
    /// widen the search. Each prefix is also a range (`>= "smi" AND <
    /// "smj"`), which both engines answer from the name indexes (a LIKE
    /// alone is a full scan: SQLite's LIKE is case-blind and PostgreSQL's
    /// needs a C-collated index); the LIKE keeps the result exact under any
    /// collation.
    ///
    /// Read in name order, the first-name range is kept from the planners
    /// (`first_name_lc || ''` is the same text but no index's column):
    /// PostgreSQL, seeing it, reads the first names in range and sorts them
    /// all (it multiplies the range's and the LIKE's selectivities, expects
    /// two rows, and is wrong by a thousand).
    fn way(&mut self, way: &NameMatch<'_>, read: &WayRead) -> String {
        let first_name = match read {
            WayRead::InNameOrder => "(first_name_lc || '')",
            WayRead::Whole | WayRead::NoName => "first_name_lc",
        };
        let mut conditions = String::new();
        for (column, word) in [("last_name_lc", way.last), (first_name, way.first)] {
            if let Some(word) = word {
                conditions.push_str(" AND ");
                conditions.push_str(&self.prefix(column, word));
            }
        }
        conditions
    }

    /// `column` starts with `word`, as an index range and a LIKE.
    fn prefix(&mut self, column: &str, word: &str) -> String {
        let like = self.bind(format!("{word}%"));
        let from = self.bind(word.to_string());
        match next_prefix(word) {
            Some(upto) => {
                let upto = self.bind(upto);
                format!("({column} >= {from} AND {column} < {upto} AND {column} LIKE {like})")
            }
            None => format!("({column} >= {from} AND {column} LIKE {like})"),
        }
    }
}

/// The smallest string after every string that starts with `word`: its
/// last character moved one on ("smi" -> "smj").
fn next_prefix(word: &str) -> Option<String> {
    let mut chars: Vec<char> = word.chars().collect();
    let last = chars.pop()?;
    let next = char::from_u32(u32::from(last) + 1)?;
    chars.push(next);
    Some(chars.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::next_prefix;

    #[test]
    fn the_range_after_a_prefix_starts_at_its_last_character_moved_on() {
        assert_eq!(next_prefix("smi").as_deref(), Some("smj"));
        assert_eq!(next_prefix("o'n").as_deref(), Some("o'o"));
        assert_eq!(next_prefix("jos\u{e9}").as_deref(), Some("jos\u{ea}"));
        assert_eq!(next_prefix(""), None);
        // Every name starting with the prefix sorts inside [prefix, next).
        for name in ["smi", "smith", "smizzz", "smi\u{10ffff}"] {
            assert!(("smi".."smj").contains(&name), "{name}");
        }
    }
}
