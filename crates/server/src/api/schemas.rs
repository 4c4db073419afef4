//! Schemas of the core's value types as the API shows them. The DTOs in
//! `dto.rs` hold these values as they are (`Schedule`, `Trigger`,
//! `AutoDecision`, `StaffStatus`, ...), serialized by the core's own serde,
//! and name the mirror here as their `value_type`: only the document uses
//! these types, so enroll-core needs no OpenAPI derive. Each mirror follows
//! its original's serde attributes; the server test and schemathesis check
//! that every answer matches the document.
#![allow(dead_code)]

use serde::Serialize;
use utoipa::ToSchema;

/// An error answer's `code` (`server::error`, and the invalid-field
/// answers of practices and webhooks). Each response says which it carries.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = ErrorCode)]
pub(crate) enum ErrorCodeDoc {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    DuplicateMrn,
    DuplicatePractice,
    Conflict,
    WebhookDisabled,
    MergedInto,
    AlreadyActive,
    Deceased,
    PatientResponded,
    OptedOut,
    InvalidFields,
    MissingFields,
    CapReached,
}

/// `core::Field`: a demographic field's key.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = Field)]
pub(crate) enum FieldDoc {
    FirstName,
    LastName,
    DateOfBirth,
    BirthSex,
    Zip,
    Email,
    CellPhone,
}

/// `core::Problem`: why a field is not complete; `detail` says in words
/// why an invalid one is invalid (never repeating the value).
#[derive(Serialize, ToSchema)]
#[schema(as = Problem)]
pub(crate) struct ProblemDoc {
    reason: ProblemReasonDoc,
    detail: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = ProblemReason)]
pub(crate) enum ProblemReasonDoc {
    Missing,
    Invalid,
}

/// `core::FieldProblem`: a field, its problem, and (in the API) a sentence.
#[derive(Serialize, ToSchema)]
#[schema(as = FieldProblem)]
pub(crate) struct FieldProblemDoc {
    /// A patient field's key (`email`, `date_of_birth`, ...) or, for a
    /// practice or a webhook endpoint, the request's field (`code`, `url`).
    field: String,
    problem: ProblemDoc,
    message: String,
}

/// `core::InviteKind`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = InviteKind)]
pub(crate) enum InviteKindDoc {
    Auto,
    Manual,
}

/// `core::InviteState`: the life of an invite in the outbox.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = InviteState)]
pub(crate) enum InviteStateDoc {
    Scheduled,
    Queued,
    Sent,
    Failed,
    Suppressed,
    Cancelled,
}

/// `core::PatientResponse`, recorded by staff.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = PatientResponse)]
pub(crate) enum PatientResponseDoc {
    Declined,
    Deferred,
}

/// `store::MessageStatus`: what became of an HL7 message.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = MessageStatus)]
pub(crate) enum MessageStatusDoc {
    Applied,
    Error,
    Rejected,
    Duplicate,
}

/// `core::WebhookEventType`.
#[derive(Serialize, ToSchema)]
#[schema(as = WebhookEventType)]
pub(crate) enum WebhookEventTypeDoc {
    #[serde(rename = "patient.activated")]
    PatientActivated,
    #[serde(rename = "invite.sent")]
    InviteSent,
    #[serde(rename = "invite.failed")]
    InviteFailed,
    #[serde(rename = "invite.suppressed")]
    InviteSuppressed,
    #[serde(rename = "webhook.ping")]
    Ping,
}

/// `core::Window`: one weekly open window, local time; `closes` 00:00 is
/// midnight at the end of the day.
#[derive(Serialize, ToSchema)]
#[schema(as = Window)]
pub(crate) struct WindowDoc {
    weekday: WeekdayDoc,
    /// "HH:MM"
    #[schema(example = "08:00", pattern = "^([01][0-9]|2[0-3]):[0-5][0-9]$")]
    opens: String,
    /// "HH:MM"
    #[schema(example = "17:00", pattern = "^([01][0-9]|2[0-3]):[0-5][0-9]$")]
    closes: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = Weekday)]
pub(crate) enum WeekdayDoc {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

/// `core::Schedule`: the Auto Invite Schedule (R5).
#[derive(Serialize, ToSchema)]
#[schema(as = Schedule)]
pub(crate) struct ScheduleDoc {
    /// IANA name, e.g. "America/New_York".
    #[schema(example = "America/New_York")]
    time_zone: String,
    windows: Vec<WindowDoc>,
    /// Dates on which nothing is sent (YYYY-MM-DD).
    #[serde(default)]
    closed_dates: Vec<DateDoc>,
}

/// A date, YYYY-MM-DD.
#[derive(Serialize, ToSchema)]
#[schema(as = Date, value_type = String, format = Date, example = "2026-12-24")]
pub(crate) struct DateDoc(String);

/// `notify::Language`: en or es.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = Language)]
pub(crate) enum LanguageDoc {
    En,
    Es,
}

/// A template part as the API names it (`server::templates::KINDS`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = TemplateKind)]
pub(crate) enum TemplateKindDoc {
    Subject,
    Text,
    Html,
    Sms,
}

/// `core::Trigger` (R2), tagged by `kind`.
#[derive(Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[schema(as = Trigger)]
pub(crate) enum TriggerDoc {
    ChartAdded,
    RequiredFieldsChanged { fields: Vec<FieldDoc> },
    NewEncounter,
    NewAppointment,
}

/// `core::Ineligible` (R4): why no invite, tagged by `reason`.
#[derive(Serialize, ToSchema)]
#[serde(tag = "reason", rename_all = "snake_case")]
#[schema(as = Ineligible)]
pub(crate) enum IneligibleDoc {
    AutoInvitesOff,
    AlreadyActive,
    Deceased,
    Declined,
    Deferred,
    OptedOut,
    MissingFields {
        problems: Vec<CoreFieldProblemDoc>,
    },
    ScheduleNeverOpens,
    NotYetInvited,
    CapReached {
        #[schema(format = DateTime)]
        next_possible_at: String,
    },
}

/// `core::FieldProblem` as the core serializes it (no sentence).
#[derive(Serialize, ToSchema)]
#[schema(as = CoreFieldProblem)]
pub(crate) struct CoreFieldProblemDoc {
    field: FieldDoc,
    problem: ProblemDoc,
}

/// `core::AutoDecision` (R3-R8), tagged by `decision`.
#[derive(Serialize, ToSchema)]
#[serde(tag = "decision", rename_all = "snake_case")]
#[schema(as = AutoDecision)]
pub(crate) enum AutoDecisionDoc {
    SendNow,
    Queue {
        #[schema(format = DateTime)]
        at: String,
    },
    Coalesced,
    Suppressed {
        #[schema(format = DateTime)]
        next_possible_at: String,
    },
    NotInvited {
        reasons: Vec<IneligibleDoc>,
    },
}

/// `core::StaffStatus` (R14), tagged by `status`.
#[derive(Serialize, ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
#[schema(as = StaffStatus)]
pub(crate) enum StaffStatusDoc {
    Active,
    Deceased,
    Declined,
    Deferred,
    OptedOut,
    DeliveryFailed {
        reason: String,
    },
    Pending {
        #[schema(format = DateTime)]
        invited_at: String,
        #[schema(minimum = 0)]
        sends_in_30_days: u64,
        delivery: String,
    },
    NotEnrolled {
        reasons: Vec<IneligibleDoc>,
    },
}
