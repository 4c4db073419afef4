//! The enrollment rules of DESIGN.md section 2 as pure code.
//!
//! Nothing here reads a clock, a file or the network: every function that
//! depends on time takes the instant (`jiff::Timestamp`) or the practice's
//! local date as an argument, so the rules are tested with any clock,
//! including across DST changes.

pub mod activation;
pub mod cap;
pub mod delivery;
pub mod fields;
pub mod go_live;
pub mod intake;
pub mod invite;
pub mod language;
pub mod measure;
pub mod merge;
pub mod policy;
pub mod practice;
pub mod role;
pub mod roster;
pub mod schedule;
pub mod search;
pub mod short_code;
pub mod sms;
pub mod status;
pub mod trigger;
pub mod webhook;

pub use activation::{
    ActivationRules, CodeState, LinkFacts, LinkState, UsernameProblem, code_state,
    identity_matches, link_state, normalize_username, parse_entered_date, username_candidates,
};
pub use cap::{
    CAP_MAX_SENDS, CAP_WINDOW, CountedSend, next_send_possible_at, queued_over_cap, sends_in_window,
};
pub use delivery::{
    AttemptOutcome, Channel, ChannelAnswer, RetryPolicy, RetryTiming, attempt_outcome,
};
pub use fields::{
    BirthSex, Demographics, E164Phone, EmailAddress, Field, FieldProblem, PersonName, Problem,
    ValidFields, Zip, check, phone_for_people,
};
pub use go_live::{
    GO_LIVE_CATCH_UP, GO_LIVE_RATE_MAX, GO_LIVE_RATE_MIN, GO_LIVE_TRIGGER, GoLiveChange,
    GoLiveItemState, GoLiveRunState, RateOutOfRange, Releases, Throttle,
};
pub use intake::{AppointmentStatus, IfKnown, IntakeEvent, PatientChange};
pub use invite::{InviteKind, InviteState};
pub use language::Language;
pub use measure::{
    ACCESS_BUSINESS_DAYS, Access, AccessFacts, MeasureOutcome, access_deadline,
    business_days_after, is_business_day, measure_patient, visit_date, visit_is_timely,
};
pub use merge::{ChartFlags, merged_flags};
pub use policy::{
    AutoDecision, Ineligible, ManualDecision, PatientFacts, PatientResponse, PracticeRules,
    Refusal, SendHistory, decide_auto, decide_go_live, decide_manual,
};
pub use practice::{InvalidPracticeCode, PRACTICE_CODE_MAX_LEN, PracticeCode};
pub use role::{PracticeScope, Role};
pub use roster::{
    BadMapping, HeaderMap, HeaderProblems, RosterColumn, RosterColumns, RowProblem,
    parse_roster_date,
};
pub use schedule::{Schedule, ScheduleError, ValidSchedule, Window};
pub use search::{NameMatch, NameTerms, SearchTerms, parse_date};
pub use short_code::{
    SHORT_CODE_LEN, format_short_code, normalize_short_code, short_code_from_bytes,
};
pub use sms::{SMS_DAY, SMS_PER_DAY, SMS_PER_WEEK, SMS_WEEK, TextsToNumber, may_text};
pub use status::{InviteSummary, StaffStatus, staff_status};
pub use trigger::{Trigger, changed_required_fields};
pub use webhook::{
    WebhookAnswer, WebhookEventType, WebhookOutcome, parse_subscriptions, webhook_outcome,
    webhook_retry_policy,
};
