//! The JSON API's own request and response types (DTOs). Handlers answer
//! these, made `From` the store's records, and read requests into these
//! before they give the core's types to the store: the records can change
//! for storage's sake without changing the API, and the OpenAPI derives
//! (`ToSchema`) stay here, out of enroll-core and enroll-store. Field names
//! are the API's contract: each DTO serializes exactly as the record it
//! replaced did (the API tests assert on them).
//!
//! Values of the core (`Schedule`, `Trigger`, `AutoDecision`, `StaffStatus`,
//! the invite kinds and states) are held as they are and documented by the
//! mirrors in `schemas.rs`.

use enroll_core::{
    AutoDecision, Demographics, InviteKind, InviteState, PatientResponse, Schedule, StaffStatus,
    Trigger, WebhookEventType,
};
use enroll_store::{
    AuditEntry, Channels, Chart, FailedDelivery, Invite, MessageStatus, NewPractice, Patient,
    Practice, SaveOutcome, StoredMessage, TimelineEntry, TriggerOutcome, WebhookDelivery,
    WebhookEndpoint,
};
use jiff::Timestamp;
use jiff::civil::Date;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::schemas::{
    AutoDecisionDoc, ErrorCodeDoc, FieldProblemDoc, InviteKindDoc, InviteStateDoc,
    MessageStatusDoc, PatientResponseDoc, ScheduleDoc, StaffStatusDoc, TriggerDoc,
    WebhookEventTypeDoc,
};
use crate::error::problems_json;

// ---------------------------------------------------------------- errors

/// Every error answer: a stable `code`, a sentence for people, and for some
/// codes more fields (`problems` for `invalid_fields` and `missing_fields`,
/// `next_possible_at` for `cap_reached`, `surviving_patient_id` for
/// `merged_into`, `response` for `patient_responded`).
#[derive(Serialize, ToSchema)]
#[schema(as = Error)]
pub(crate) struct ErrorBody {
    #[schema(value_type = ErrorCodeDoc)]
    code: String,
    message: String,
    #[schema(nullable = false)]
    problems: Option<Vec<FieldProblemDoc>>,
    #[schema(nullable = false, format = DateTime)]
    next_possible_at: Option<String>,
    #[schema(nullable = false)]
    surviving_patient_id: Option<i64>,
    #[schema(nullable = false, value_type = Option<PatientResponseDoc>)]
    response: Option<()>,
}

// ---------------------------------------------------------------- patients

/// Demographics as a source gives them: every field optional text (a
/// field left out or null is cleared by a PUT); `date_of_birth` is
/// `YYYY-MM-DD`. R1 decides what is complete, and the chart's `problems`
/// say what is not.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(default)]
#[schema(as = Demographics)]
pub(crate) struct DemographicsDto {
    #[schema(example = "Maria")]
    pub first_name: Option<String>,
    #[schema(example = "Garcia")]
    pub last_name: Option<String>,
    #[schema(example = "1990-07-04")]
    pub date_of_birth: Option<String>,
    /// F, M or UNK.
    #[schema(example = "F")]
    pub birth_sex: Option<String>,
    #[schema(example = "02139")]
    pub zip: Option<String>,
    #[schema(example = "maria@example.com")]
    pub email: Option<String>,
    #[schema(example = "(617) 555-0100")]
    pub cell_phone: Option<String>,
}

impl From<Demographics> for DemographicsDto {
    fn from(d: Demographics) -> DemographicsDto {
        DemographicsDto {
            first_name: d.first_name,
            last_name: d.last_name,
            date_of_birth: d.date_of_birth,
            birth_sex: d.birth_sex,
            zip: d.zip,
            email: d.email,
            cell_phone: d.cell_phone,
        }
    }
}

impl From<DemographicsDto> for Demographics {
    fn from(d: DemographicsDto) -> Demographics {
        Demographics {
            first_name: d.first_name,
            last_name: d.last_name,
            date_of_birth: d.date_of_birth,
            birth_sex: d.birth_sex,
            zip: d.zip,
            email: d.email,
            cell_phone: d.cell_phone,
        }
    }
}

/// `POST /api/patients`: the practice, the MRN and the demographics.
#[derive(Deserialize, ToSchema)]
pub(crate) struct NewPatientRequest {
    pub practice_id: i64,
    #[schema(example = "MRN-1001")]
    pub mrn: String,
    #[serde(flatten)]
    pub demographics: DemographicsDto,
}

#[derive(Serialize, ToSchema)]
#[schema(as = Patient)]
pub(crate) struct PatientDto {
    id: i64,
    practice_id: i64,
    mrn: String,
    demographics: DemographicsDto,
    preferred_language: Option<String>,
    #[schema(value_type = Option<String>, format = DateTime)]
    activated_at: Option<Timestamp>,
    deceased: bool,
    #[schema(value_type = Option<PatientResponseDoc>)]
    response: Option<PatientResponse>,
    email_opted_out: bool,
    sms_opted_out: bool,
    #[schema(value_type = Option<String>, format = DateTime)]
    fields_confirmed_at: Option<Timestamp>,
    fields_confirmed_by: Option<String>,
    /// The chart an HL7 A40 merged this one into; null for a chart in use.
    merged_into: Option<i64>,
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    updated_at: Timestamp,
}

impl From<Patient> for PatientDto {
    fn from(p: Patient) -> PatientDto {
        PatientDto {
            id: p.id,
            practice_id: p.practice_id,
            mrn: p.mrn,
            demographics: p.demographics.into(),
            preferred_language: p.preferred_language,
            activated_at: p.activated_at,
            deceased: p.deceased,
            response: p.response,
            email_opted_out: p.email_opted_out,
            sms_opted_out: p.sms_opted_out,
            fields_confirmed_at: p.fields_confirmed_at,
            fields_confirmed_by: p.fields_confirmed_by,
            merged_into: p.merged_into,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

/// What one trigger led to (R2, and the decision of R3-R8).
#[derive(Serialize, ToSchema)]
#[schema(as = TriggerOutcome)]
pub(crate) struct TriggerOutcomeDto {
    /// The chart the trigger was applied to (the survivor of a merge).
    patient_id: i64,
    #[schema(value_type = TriggerDoc)]
    trigger: Trigger,
    #[schema(value_type = AutoDecisionDoc)]
    decision: AutoDecision,
    invite_id: Option<i64>,
}

impl From<TriggerOutcome> for TriggerOutcomeDto {
    fn from(t: TriggerOutcome) -> TriggerOutcomeDto {
        TriggerOutcomeDto {
            patient_id: t.patient_id,
            trigger: t.trigger,
            decision: t.decision,
            invite_id: t.invite_id,
        }
    }
}

/// A created or updated patient: the record as stored, whether it was
/// added, and what each trigger led to.
#[derive(Serialize, ToSchema)]
#[schema(as = SaveOutcome)]
pub(crate) struct SaveOutcomeDto {
    patient: PatientDto,
    created: bool,
    triggers: Vec<TriggerOutcomeDto>,
}

impl From<SaveOutcome> for SaveOutcomeDto {
    fn from(s: SaveOutcome) -> SaveOutcomeDto {
        SaveOutcomeDto {
            patient: s.patient.into(),
            created: s.created,
            triggers: s.triggers.into_iter().map(Into::into).collect(),
        }
    }
}

#[derive(Serialize, ToSchema)]
#[schema(as = Invite)]
pub(crate) struct InviteDto {
    id: i64,
    patient_id: i64,
    practice_id: i64,
    #[schema(value_type = InviteKindDoc)]
    kind: InviteKind,
    #[schema(value_type = InviteStateDoc)]
    state: InviteState,
    /// The trigger's key for an auto invite.
    trigger: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    due_at: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    counted_at: Option<Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    sent_at: Option<Timestamp>,
    attempts: i64,
    failure_reason: Option<String>,
    #[schema(value_type = Option<String>, format = DateTime)]
    next_possible_at: Option<Timestamp>,
    actor: Option<String>,
}

impl From<Invite> for InviteDto {
    fn from(i: Invite) -> InviteDto {
        InviteDto {
            id: i.id,
            patient_id: i.patient_id,
            practice_id: i.practice_id,
            kind: i.kind,
            state: i.state,
            trigger: i.trigger,
            created_at: i.created_at,
            due_at: i.due_at,
            counted_at: i.counted_at,
            sent_at: i.sent_at,
            attempts: i.attempts,
            failure_reason: i.failure_reason,
            next_possible_at: i.next_possible_at,
            actor: i.actor,
        }
    }
}

/// One line of the patient's timeline; `detail` holds field names and
/// decisions, never field values.
#[derive(Serialize, ToSchema)]
#[schema(as = TimelineEntry)]
pub(crate) struct TimelineEntryDto {
    id: i64,
    #[schema(value_type = String, format = DateTime)]
    at: Timestamp,
    kind: String,
    #[schema(value_type = Object)]
    detail: Value,
    source: String,
    reference: Option<String>,
    actor: Option<String>,
}

impl From<TimelineEntry> for TimelineEntryDto {
    fn from(t: TimelineEntry) -> TimelineEntryDto {
        TimelineEntryDto {
            id: t.id,
            at: t.at,
            kind: t.kind,
            detail: t.detail,
            source: t.source,
            reference: t.reference,
            actor: t.actor,
        }
    }
}

/// A chart as staff see it: the record, the status and its words (R14),
/// the fields that are missing or invalid (R1, R11), the invites and the
/// timeline.
#[derive(Serialize, ToSchema)]
#[schema(as = PatientView)]
pub(crate) struct PatientViewDto {
    patient: PatientDto,
    #[schema(value_type = StaffStatusDoc)]
    status: StaffStatus,
    status_words: String,
    #[schema(value_type = Vec<FieldProblemDoc>)]
    problems: Vec<Value>,
    invites: Vec<InviteDto>,
    timeline: Vec<TimelineEntryDto>,
}

impl From<Chart> for PatientViewDto {
    fn from(chart: Chart) -> PatientViewDto {
        PatientViewDto {
            status_words: chart.status.words(),
            problems: problems_json(&chart.problems),
            patient: chart.patient.into(),
            status: chart.status,
            invites: chart.invites.into_iter().map(Into::into).collect(),
            timeline: chart.timeline.into_iter().map(Into::into).collect(),
        }
    }
}

/// Enroll Now's answer: the invite, and whether this request repeated an
/// earlier one with the same `Idempotency-Key` (nothing more was sent).
#[derive(Serialize, ToSchema)]
#[schema(as = Enrolled)]
pub(crate) struct EnrolledDto {
    pub invite: InviteDto,
    pub replayed: bool,
}

#[derive(Serialize, ToSchema)]
#[schema(as = AuditEntry)]
pub(crate) struct AuditEntryDto {
    id: i64,
    #[schema(value_type = String, format = DateTime)]
    at: Timestamp,
    actor: String,
    action: String,
    patient_id: Option<i64>,
    /// What a search looked for and which patients it showed.
    detail: Option<String>,
    /// patient, practice, message, invite, staff_user, search; none on a sign-in.
    target_type: Option<String>,
    target_id: Option<i64>,
}

impl From<AuditEntry> for AuditEntryDto {
    fn from(a: AuditEntry) -> AuditEntryDto {
        AuditEntryDto {
            id: a.id,
            at: a.at,
            actor: a.actor,
            action: a.action,
            patient_id: a.patient_id,
            detail: a.detail,
            target_type: a.target_type,
            target_id: a.target_id,
        }
    }
}

// ---------------------------------------------------------------- practices

/// Which channels the practice's invites go by; at least one is on.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[schema(as = Channels)]
pub(crate) struct ChannelsDto {
    pub email: bool,
    pub sms: bool,
}

impl From<Channels> for ChannelsDto {
    fn from(c: Channels) -> ChannelsDto {
        ChannelsDto {
            email: c.email,
            sms: c.sms,
        }
    }
}

impl From<ChannelsDto> for Channels {
    fn from(c: ChannelsDto) -> Channels {
        Channels {
            email: c.email,
            sms: c.sms,
        }
    }
}

/// `POST /api/practices`.
#[derive(Deserialize, ToSchema)]
pub(crate) struct NewPracticeRequest {
    /// A plain token, e.g. the HL7 sending facility (MSH-4).
    #[schema(example = "NORTH")]
    pub code: String,
    #[schema(example = "North Clinic")]
    pub name: String,
    #[schema(value_type = ScheduleDoc)]
    pub schedule: Schedule,
}

impl From<NewPracticeRequest> for NewPractice {
    fn from(n: NewPracticeRequest) -> NewPractice {
        NewPractice {
            code: n.code,
            name: n.name,
            schedule: n.schedule,
        }
    }
}

#[derive(Serialize, ToSchema)]
#[schema(as = Practice)]
pub(crate) struct PracticeDto {
    id: i64,
    code: String,
    name: String,
    #[schema(value_type = ScheduleDoc)]
    schedule: Schedule,
    auto_invites_on: bool,
    #[schema(value_type = Option<String>, format = Date)]
    go_live_date: Option<Date>,
    /// E.164; shown to patients whose link no longer works.
    phone: Option<String>,
    channels: ChannelsDto,
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
}

impl From<Practice> for PracticeDto {
    fn from(p: Practice) -> PracticeDto {
        PracticeDto {
            id: p.id,
            code: p.code,
            name: p.name,
            schedule: p.schedule.schedule,
            auto_invites_on: p.auto_invites_on,
            go_live_date: p.go_live_date,
            phone: p.phone,
            channels: p.channels.into(),
            created_at: p.created_at,
        }
    }
}

// ---------------------------------------------------------------- deliveries

/// A delivery that failed or is waiting for a retry.
#[derive(Serialize, ToSchema)]
#[schema(as = FailedDelivery)]
pub(crate) struct FailedDeliveryDto {
    invite_id: i64,
    patient_id: i64,
    first_name: Option<String>,
    last_name: Option<String>,
    #[schema(value_type = InviteStateDoc)]
    state: InviteState,
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
    attempts: i64,
    #[schema(value_type = Option<String>, format = DateTime)]
    next_retry_at: Option<Timestamp>,
    channel: Option<String>,
    address: Option<String>,
    reason: Option<String>,
}

impl From<FailedDelivery> for FailedDeliveryDto {
    fn from(f: FailedDelivery) -> FailedDeliveryDto {
        FailedDeliveryDto {
            invite_id: f.invite_id,
            patient_id: f.patient_id,
            first_name: f.first_name,
            last_name: f.last_name,
            state: f.state,
            created_at: f.created_at,
            attempts: f.attempts,
            next_retry_at: f.next_retry_at,
            channel: f.channel,
            address: f.address,
            reason: f.reason,
        }
    }
}

// ---------------------------------------------------------------- HL7 messages

/// A stored HL7 message (without its raw bytes).
#[derive(Serialize, ToSchema)]
#[schema(as = Message)]
pub(crate) struct MessageDto {
    id: i64,
    #[schema(value_type = String, format = DateTime)]
    received_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    processed_at: Timestamp,
    peer: Option<String>,
    sending_app: String,
    /// MSH-4
    sending_facility: String,
    /// MSH-10
    control_id: String,
    /// e.g. `ADT^A04`
    message_type: String,
    #[schema(value_type = MessageStatusDoc)]
    status: MessageStatus,
    ack_code: String,
    duplicate_of: Option<i64>,
    practice_id: Option<i64>,
    patient_id: Option<i64>,
    error_location: Option<String>,
    error: Option<String>,
    #[schema(value_type = Option<String>, format = DateTime)]
    reprocessed_at: Option<Timestamp>,
    reprocessed_by: Option<String>,
    /// What intake had to do to keep the message faithfully, in words.
    notes: Option<String>,
    /// The message's bytes; only in the answer to a reprocess.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    raw: Option<Vec<u8>>,
    /// The ACK that answered it; only on one message.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    ack: Option<String>,
}

impl From<StoredMessage> for MessageDto {
    fn from(m: StoredMessage) -> MessageDto {
        MessageDto {
            id: m.id,
            received_at: m.received_at,
            processed_at: m.processed_at,
            peer: m.peer,
            sending_app: m.sending_app,
            sending_facility: m.sending_facility,
            control_id: m.control_id,
            message_type: m.message_type,
            status: m.status,
            ack_code: m.ack_code,
            duplicate_of: m.duplicate_of,
            practice_id: m.practice_id,
            patient_id: m.patient_id,
            error_location: m.error_location,
            error: m.error,
            reprocessed_at: m.reprocessed_at,
            reprocessed_by: m.reprocessed_by,
            notes: m.notes,
            raw: m.raw,
            ack: m.ack,
        }
    }
}

/// One message with its text: `raw_text` is the message as received, bytes
/// that are not UTF-8 shown as replacement characters, segments on lines.
#[derive(Serialize, ToSchema)]
#[schema(as = MessageView)]
pub(crate) struct MessageViewDto {
    #[serde(flatten)]
    pub message: MessageDto,
    pub raw_text: String,
}

// ---------------------------------------------------------------- webhooks

/// A practice's webhook endpoint (never its secret).
#[derive(Serialize, ToSchema)]
#[schema(as = WebhookEndpoint)]
pub(crate) struct WebhookEndpointDto {
    id: i64,
    practice_id: i64,
    url: String,
    #[schema(value_type = Vec<WebhookEventTypeDoc>)]
    events: Vec<WebhookEventType>,
    enabled: bool,
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
    created_by: String,
}

impl From<WebhookEndpoint> for WebhookEndpointDto {
    fn from(e: WebhookEndpoint) -> WebhookEndpointDto {
        WebhookEndpointDto {
            id: e.id,
            practice_id: e.practice_id,
            url: e.url,
            events: e.events,
            enabled: e.enabled,
            created_at: e.created_at,
            created_by: e.created_by,
        }
    }
}

/// A new endpoint with its secret, which is shown this once.
#[derive(Serialize, ToSchema)]
#[schema(as = NewWebhookEndpoint)]
pub(crate) struct NewWebhookEndpointDto {
    #[serde(flatten)]
    pub endpoint: WebhookEndpointDto,
    pub secret: String,
}

/// One event to one endpoint (without the body).
#[derive(Serialize, ToSchema)]
#[schema(as = WebhookDelivery)]
pub(crate) struct WebhookDeliveryDto {
    id: i64,
    event_id: String,
    event_type: String,
    /// queued | delivered | failed
    state: String,
    attempts: i64,
    #[schema(value_type = Option<String>, format = DateTime)]
    next_attempt_at: Option<Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    last_attempt_at: Option<Timestamp>,
    last_status: Option<i64>,
    last_error: Option<String>,
    #[schema(value_type = Option<String>, format = DateTime)]
    delivered_at: Option<Timestamp>,
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
}

impl From<WebhookDelivery> for WebhookDeliveryDto {
    fn from(d: WebhookDelivery) -> WebhookDeliveryDto {
        WebhookDeliveryDto {
            id: d.id,
            event_id: d.event_id,
            event_type: d.event_type,
            state: d.state,
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at,
            last_attempt_at: d.last_attempt_at,
            last_status: d.last_status,
            last_error: d.last_error,
            delivered_at: d.delivered_at,
            created_at: d.created_at,
        }
    }
}

/// The ping that was queued.
#[derive(Serialize, ToSchema)]
pub(crate) struct PingQueued {
    pub event_id: String,
    /// Always `webhook.ping`.
    #[serde(rename = "type")]
    pub event_type: &'static str,
}

/// Lists converted element by element.
pub(crate) fn list<T, D: From<T>>(items: Vec<T>) -> Vec<D> {
    items.into_iter().map(D::from).collect()
}
