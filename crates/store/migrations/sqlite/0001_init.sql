-- Enroll schema, SQLite flavour. Keep in step with ../postgres/0001_init.sql:
-- same tables, columns and names; only types and id generation differ.
-- Every *_at column holds milliseconds since the Unix epoch (UTC).

CREATE TABLE practices (
    id              INTEGER PRIMARY KEY,
    code            TEXT NOT NULL UNIQUE,
    name            TEXT NOT NULL,
    schedule_json   TEXT NOT NULL,
    auto_invites_on BOOLEAN NOT NULL DEFAULT FALSE,
    go_live_date    TEXT,
    created_at      BIGINT NOT NULL
);

CREATE TABLE patients (
    id                  INTEGER PRIMARY KEY,
    practice_id         BIGINT NOT NULL REFERENCES practices(id),
    mrn                 TEXT NOT NULL,
    first_name          TEXT,
    last_name           TEXT,
    first_name_lc       TEXT,
    last_name_lc        TEXT,
    date_of_birth       TEXT,
    birth_sex           TEXT,
    zip                 TEXT,
    email               TEXT,
    cell_phone          TEXT,
    preferred_language  TEXT,
    activated_at        BIGINT,
    deceased            BOOLEAN NOT NULL DEFAULT FALSE,
    response            TEXT,
    email_opted_out     BOOLEAN NOT NULL DEFAULT FALSE,
    sms_opted_out       BOOLEAN NOT NULL DEFAULT FALSE,
    fields_confirmed_at BIGINT,
    fields_confirmed_by TEXT,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    UNIQUE (practice_id, mrn)
);
CREATE INDEX patients_last_name_lc ON patients (last_name_lc);
CREATE INDEX patients_first_name_lc ON patients (first_name_lc);
CREATE INDEX patients_date_of_birth ON patients (date_of_birth);

-- Append-only: rows are inserted, never updated or deleted.
CREATE TABLE timeline (
    id         INTEGER PRIMARY KEY,
    patient_id BIGINT NOT NULL REFERENCES patients(id),
    at         BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    detail     TEXT NOT NULL,
    source     TEXT NOT NULL,
    reference  TEXT,
    actor      TEXT
);
CREATE INDEX timeline_patient ON timeline (patient_id, id);

-- The outbox. state: scheduled | queued | sent | failed | suppressed | cancelled.
-- counted_at is set when the send counts toward the cap (R7).
CREATE TABLE invites (
    id               INTEGER PRIMARY KEY,
    patient_id       BIGINT NOT NULL REFERENCES patients(id),
    practice_id      BIGINT NOT NULL REFERENCES practices(id),
    kind             TEXT NOT NULL,
    state            TEXT NOT NULL,
    trigger_kind     TEXT,
    created_at       BIGINT NOT NULL,
    due_at           BIGINT NOT NULL,
    counted_at       BIGINT,
    sent_at          BIGINT,
    attempts         BIGINT NOT NULL DEFAULT 0,
    failure_reason   TEXT,
    next_possible_at BIGINT,
    idempotency_key  TEXT,
    actor            TEXT,
    UNIQUE (patient_id, idempotency_key)
);
CREATE INDEX invites_patient ON invites (patient_id, counted_at);
CREATE INDEX invites_due ON invites (state, due_at);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE staff_users (
    id             INTEGER PRIMARY KEY,
    username       TEXT NOT NULL UNIQUE,
    display_name   TEXT NOT NULL,
    role           TEXT NOT NULL,
    password_hash  TEXT,
    api_token_hash TEXT UNIQUE,
    disabled       BOOLEAN NOT NULL DEFAULT FALSE,
    created_at     BIGINT NOT NULL
);

-- Who looked at or changed what (views included), for the audit of health data access.
CREATE TABLE audit_log (
    id         INTEGER PRIMARY KEY,
    at         BIGINT NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    patient_id BIGINT,
    detail     TEXT
);
CREATE INDEX audit_log_patient ON audit_log (patient_id, id);
