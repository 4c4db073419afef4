//! The store's records, and their conversion from database rows.

use enroll_core::{
    AutoDecision, ChartFlags, Demographics, Field, PatientFacts, PatientResponse, Refusal,
    Schedule, Trigger, ValidSchedule, check,
};
use jiff::Timestamp;
use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::{Result, StoreError, from_ms, opt_from_ms};

/// Where a change came from, recorded on the timeline (R2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// api, hl7, fhir, csv, staff, demo, system
    pub channel: String,
    /// e.g. the HL7 message control id or a request id
    pub reference: Option<String>,
    /// the staff user or system account
    pub actor: Option<String>,
    /// The audit action (`patient.update`...) the change writes in its
    /// own transaction, about what it changed; none for changes no staff
    /// member asked for. Not part of the timeline's record.
    #[serde(skip)]
    pub audit: Option<String>,
}

impl Source {
    /// Who made the change, for the audit log and the confirmation's
    /// name: the actor, or the channel when no one is named.
    pub fn who(&self) -> &str {
        self.actor.as_deref().unwrap_or(&self.channel)
    }

    pub fn new(channel: &str, actor: Option<&str>) -> Source {
        Source {
            channel: channel.to_string(),
            reference: None,
            actor: actor.map(str::to_string),
            audit: None,
        }
    }

    /// This source, asking the change to write the audit line `action`
    /// in its transaction.
    pub fn audited(mut self, action: &str) -> Source {
        self.audit = Some(action.to_string());
        self
    }

    pub fn with_reference(mut self, reference: impl Into<String>) -> Source {
        self.reference = Some(reference.into());
        self
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewPractice {
    /// Stable code, e.g. the HL7 sending facility (MSH-4).
    pub code: String,
    pub name: String,
    pub schedule: Schedule,
}

#[derive(Debug, Clone, Serialize)]
pub struct Practice {
    pub id: i64,
    pub code: String,
    pub name: String,
    /// Validated once, when the practice is read (serialized as the
    /// configured `Schedule`).
    pub schedule: ValidSchedule,
    pub auto_invites_on: bool,
    pub go_live_date: Option<Date>,
    /// E.164; shown to patients whose link no longer works.
    pub phone: Option<String>,
    /// Which channels the practice's invites go by.
    pub channels: Channels,
    pub created_at: Timestamp,
}

/// The Integration Tool's channel switches: at least one is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channels {
    pub email: bool,
    pub sms: bool,
}

/// Where a practice stands before go-live: how many charts it has, how
/// many could be invited now, and how many of the others lack each
/// required field (a chart may lack several).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Readiness {
    pub patients: i64,
    /// Not active, deceased, merged away, declined, deferred or opted out
    /// of email, and no required field blank. Field values are checked
    /// again (R1) when an invite is made; this count is for the page.
    pub ready: i64,
    /// For each required field, in [`Field::REQUIRED`] order, the
    /// invitable charts on which it is blank.
    pub missing: Vec<(Field, i64)>,
}

/// The columns of [`PracticeRow`], named rather than `*`: SQLite expands a
/// `*` when it prepares a statement, with the columns the connection last
/// saw, so a pooled connection opened before a migration added a column
/// (0011) prepared seven and stepped eight, which sqlx cannot read.
pub(crate) const PRACTICE_COLUMNS: &str = "id, code, name, schedule_json, auto_invites_on, go_live_date, phone, email_on, sms_on, created_at";

#[derive(sqlx::FromRow)]
pub(crate) struct PracticeRow {
    id: i64,
    code: String,
    name: String,
    schedule_json: String,
    auto_invites_on: bool,
    go_live_date: Option<String>,
    phone: Option<String>,
    email_on: bool,
    sms_on: bool,
    created_at: i64,
}

impl PracticeRow {
    pub(crate) fn into_practice(self) -> Result<Practice> {
        let schedule = self.valid_schedule()?;
        let go_live_date = self
            .go_live_date
            .map(|d| d.parse::<Date>())
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("practice {} go-live date: {e}", self.id)))?;
        Ok(Practice {
            id: self.id,
            code: self.code,
            name: self.name,
            schedule,
            auto_invites_on: self.auto_invites_on,
            go_live_date,
            phone: self.phone,
            channels: Channels {
                email: self.email_on,
                sms: self.sms_on,
            },
            created_at: from_ms(self.created_at)?,
        })
    }

    /// The stored schedule, read and validated: one that does not validate
    /// was written around the checks and is corrupt, named by practice so
    /// that `enroll doctor` can say which.
    fn valid_schedule(&self) -> Result<ValidSchedule> {
        let corrupt = |e: &dyn std::fmt::Display| {
            StoreError::Corrupt(format!(
                "practice {} ({}) schedule: {e}",
                self.id, self.code
            ))
        };
        let schedule: Schedule =
            serde_json::from_str(&self.schedule_json).map_err(|e| corrupt(&e))?;
        schedule.validate().map_err(|e| corrupt(&e))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Patient {
    pub id: i64,
    pub practice_id: i64,
    pub mrn: String,
    pub demographics: Demographics,
    pub preferred_language: Option<String>,
    pub activated_at: Option<Timestamp>,
    pub deceased: bool,
    pub response: Option<PatientResponse>,
    pub email_opted_out: bool,
    pub sms_opted_out: bool,
    pub fields_confirmed_at: Option<Timestamp>,
    pub fields_confirmed_by: Option<String>,
    /// The chart an HL7 A40 merged this one into (its history moved
    /// there); none for a chart in use.
    pub merged_into: Option<i64>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Patient {
    /// The flags an HL7 merge combines (see `enroll_core::merged_flags`).
    pub(crate) fn chart_flags(&self) -> ChartFlags {
        ChartFlags {
            activated_at: self.activated_at,
            deceased: self.deceased,
            email_opted_out: self.email_opted_out,
            sms_opted_out: self.sms_opted_out,
            response: self.response,
            preferred_language: self.preferred_language.clone(),
        }
    }

    /// What the rules need to know, with R1 evaluated on `today` (the
    /// practice's local date).
    pub fn facts(&self, today: Date) -> PatientFacts {
        let checked = check(&self.demographics, today);
        let has_cell_phone = checked
            .valid
            .as_ref()
            .is_some_and(|v| v.cell_phone.is_some())
            || (self.demographics.cell_phone.is_some()
                && !checked
                    .problems
                    .iter()
                    .any(|p| p.field == enroll_core::Field::CellPhone));
        PatientFacts {
            activated: self.activated_at.is_some(),
            deceased: self.deceased,
            response: self.response,
            email_opted_out: self.email_opted_out,
            sms_opted_out: self.sms_opted_out,
            has_cell_phone,
            missing: checked.blocking(),
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct PatientRow {
    id: i64,
    practice_id: i64,
    mrn: String,
    first_name: Option<String>,
    last_name: Option<String>,
    date_of_birth: Option<String>,
    birth_sex: Option<String>,
    zip: Option<String>,
    email: Option<String>,
    cell_phone: Option<String>,
    preferred_language: Option<String>,
    activated_at: Option<i64>,
    deceased: bool,
    response: Option<String>,
    email_opted_out: bool,
    sms_opted_out: bool,
    fields_confirmed_at: Option<i64>,
    fields_confirmed_by: Option<String>,
    merged_into: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

pub(crate) const PATIENT_COLUMNS: &str = "id, practice_id, mrn, first_name, last_name, \
    date_of_birth, birth_sex, zip, email, cell_phone, preferred_language, activated_at, \
    deceased, response, email_opted_out, sms_opted_out, fields_confirmed_at, \
    fields_confirmed_by, merged_into, created_at, updated_at";

impl PatientRow {
    pub(crate) fn into_patient(self) -> Result<Patient> {
        let response = match self.response.as_deref() {
            None => None,
            Some(raw) => Some(PatientResponse::from_key(raw).ok_or_else(|| {
                StoreError::Corrupt(format!("patient {} response {raw:?}", self.id))
            })?),
        };
        Ok(Patient {
            id: self.id,
            practice_id: self.practice_id,
            mrn: self.mrn,
            demographics: Demographics {
                first_name: self.first_name,
                last_name: self.last_name,
                date_of_birth: self.date_of_birth,
                birth_sex: self.birth_sex,
                zip: self.zip,
                email: self.email,
                cell_phone: self.cell_phone,
            },
            preferred_language: self.preferred_language,
            activated_at: opt_from_ms(self.activated_at)?,
            deceased: self.deceased,
            response,
            email_opted_out: self.email_opted_out,
            sms_opted_out: self.sms_opted_out,
            fields_confirmed_at: opt_from_ms(self.fields_confirmed_at)?,
            fields_confirmed_by: self.fields_confirmed_by,
            merged_into: self.merged_into,
            created_at: from_ms(self.created_at)?,
            updated_at: from_ms(self.updated_at)?,
        })
    }
}

/// The result of creating or updating a patient: the record as stored and
/// what each trigger led to.
/// What one trigger led to (R2 + the decision of R3-R8).
#[derive(Debug, Clone, Serialize)]
pub struct TriggerOutcome {
    /// The chart the trigger was applied to: the surviving chart when it
    /// was addressed to one merged away.
    pub patient_id: i64,
    pub trigger: Trigger,
    pub decision: AutoDecision,
    pub invite_id: Option<i64>,
}

/// The answer to Enroll Now (R9).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum EnrollOutcome {
    /// An invite was recorded; `replayed` is true when this request repeated
    /// an earlier one with the same idempotency key (no new send).
    Queued {
        invite: Invite,
        replayed: bool,
    },
    Refused {
        refusal: Refusal,
    },
    /// The chart was merged into another (HL7 A40): nothing was sent. Staff
    /// chose this chart, so the invite is not silently redirected to the
    /// survivor (whose address may differ); they are pointed at it.
    MergedInto {
        surviving_patient_id: i64,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct SaveOutcome {
    pub patient: Patient,
    pub created: bool,
    pub triggers: Vec<TriggerOutcome>,
}

/// A patient search: what the box held, understood, and whose patients
/// the searcher may see. Every given part must match.
#[derive(Debug, Clone)]
pub struct PatientSearch {
    pub terms: enroll_core::SearchTerms,
    /// Narrows to one practice (still within `scope`).
    pub practice_id: Option<i64>,
    pub scope: enroll_core::PracticeScope,
    pub limit: Option<i64>,
}

pub use enroll_core::{InviteKind, InviteState};

#[derive(Debug, Clone, Serialize)]
pub struct Invite {
    pub id: i64,
    pub patient_id: i64,
    pub practice_id: i64,
    pub kind: InviteKind,
    pub state: InviteState,
    pub trigger: Option<String>,
    pub created_at: Timestamp,
    pub due_at: Timestamp,
    pub counted_at: Option<Timestamp>,
    pub sent_at: Option<Timestamp>,
    pub attempts: i64,
    pub failure_reason: Option<String>,
    pub next_possible_at: Option<Timestamp>,
    pub actor: Option<String>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct InviteRow {
    id: i64,
    patient_id: i64,
    practice_id: i64,
    kind: String,
    state: String,
    trigger_kind: Option<String>,
    created_at: i64,
    due_at: i64,
    counted_at: Option<i64>,
    sent_at: Option<i64>,
    attempts: i64,
    failure_reason: Option<String>,
    next_possible_at: Option<i64>,
    actor: Option<String>,
}

pub(crate) const INVITE_COLUMNS: &str = "id, patient_id, practice_id, kind, state, trigger_kind, \
    created_at, due_at, counted_at, sent_at, attempts, failure_reason, next_possible_at, actor";

impl InviteRow {
    pub(crate) fn into_invite(self) -> Result<Invite> {
        let kind = InviteKind::from_key(&self.kind).ok_or_else(|| {
            StoreError::Corrupt(format!("invite {} kind {:?}", self.id, self.kind))
        })?;
        let state = InviteState::from_key(&self.state).ok_or_else(|| {
            StoreError::Corrupt(format!("invite {} state {:?}", self.id, self.state))
        })?;
        Ok(Invite {
            id: self.id,
            patient_id: self.patient_id,
            practice_id: self.practice_id,
            kind,
            state,
            trigger: self.trigger_kind,
            created_at: from_ms(self.created_at)?,
            due_at: from_ms(self.due_at)?,
            counted_at: opt_from_ms(self.counted_at)?,
            sent_at: opt_from_ms(self.sent_at)?,
            attempts: self.attempts,
            failure_reason: self.failure_reason,
            next_possible_at: opt_from_ms(self.next_possible_at)?,
            actor: self.actor,
        })
    }
}

/// One line of the patient's append-only timeline (also the audit trail of
/// changes). `detail` holds field names and decisions, never field values.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineEntry {
    pub id: i64,
    pub at: Timestamp,
    pub kind: String,
    pub detail: serde_json::Value,
    pub source: String,
    pub reference: Option<String>,
    pub actor: Option<String>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct TimelineRow {
    id: i64,
    at: i64,
    kind: String,
    detail: String,
    source: String,
    reference: Option<String>,
    actor: Option<String>,
}

impl TimelineRow {
    pub(crate) fn into_entry(self) -> Result<TimelineEntry> {
        let detail = serde_json::from_str(&self.detail)
            .map_err(|e| StoreError::Corrupt(format!("timeline {} detail: {e}", self.id)))?;
        Ok(TimelineEntry {
            id: self.id,
            at: from_ms(self.at)?,
            kind: self.kind,
            detail,
            source: self.source,
            reference: self.reference,
            actor: self.actor,
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: Timestamp,
    pub actor: String,
    pub action: String,
    pub patient_id: Option<i64>,
    /// What a search looked for and which patients it showed; never PHI
    /// beyond what the actor typed.
    pub detail: Option<String>,
    /// What the line is about (patient, practice, message, invite,
    /// staff_user, search) and its id; none on a sign-in.
    pub target_type: Option<String>,
    pub target_id: Option<i64>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct AuditRow {
    pub(crate) id: i64,
    pub(crate) at: i64,
    pub(crate) actor: String,
    pub(crate) action: String,
    pub(crate) patient_id: Option<i64>,
    pub(crate) detail: Option<String>,
    pub(crate) target_type: Option<String>,
    pub(crate) target_id: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StaffUser {
    pub id: i64,
    pub username: String,
    pub display_name: String,
    pub role: enroll_core::Role,
    /// The practices whose patients the user may see and change.
    pub scope: enroll_core::PracticeScope,
}
