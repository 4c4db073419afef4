-- HL7 v2 intake (DESIGN.md section 3). Keep in step with the other engine's 0003.

-- Every inbound message, kept raw with what became of it and the ACK we
-- answered. status: applied | error (answered AE) | rejected (AR) |
-- duplicate (an MSH-10 already seen from the same sender: answered with
-- the original ACK, not applied again).
-- dedupe_key is "MSH-3|MSH-4|MSH-10" for a first arrival and NULL for
-- duplicates and messages without a readable MSH-10, so the unique index
-- lets one first arrival per control id through even when two connections
-- race.
CREATE TABLE hl7_messages (
    id              INTEGER PRIMARY KEY,
    received_at     BIGINT NOT NULL,
    processed_at    BIGINT NOT NULL,
    peer            TEXT,
    sending_app     TEXT NOT NULL,
    sending_facility TEXT NOT NULL,
    control_id      TEXT NOT NULL,
    message_type    TEXT NOT NULL,
    dedupe_key      TEXT UNIQUE,
    duplicate_of    BIGINT REFERENCES hl7_messages(id),
    practice_id     BIGINT REFERENCES practices(id),
    patient_id      BIGINT REFERENCES patients(id),
    status          TEXT NOT NULL,
    ack_code        TEXT NOT NULL,
    error_location  TEXT,
    error           TEXT,
    raw             BLOB NOT NULL,
    ack             TEXT NOT NULL,
    reprocessed_at  BIGINT,
    reprocessed_by  TEXT
);
CREATE INDEX hl7_messages_received ON hl7_messages (received_at, id);
CREATE INDEX hl7_messages_status ON hl7_messages (status, id);
CREATE INDEX hl7_messages_patient ON hl7_messages (patient_id, id);

-- Visits seen (PV1-19): a visit number not seen before is a new encounter (R2 c).
CREATE TABLE encounters (
    id            INTEGER PRIMARY KEY,
    practice_id   BIGINT NOT NULL REFERENCES practices(id),
    patient_id    BIGINT NOT NULL REFERENCES patients(id),
    visit_number  TEXT NOT NULL,
    patient_class TEXT,
    admitted_at   TEXT,
    created_at    BIGINT NOT NULL,
    UNIQUE (practice_id, visit_number)
);
CREATE INDEX encounters_patient ON encounters (patient_id);

-- Appointments (SCH-2 / SCH-1): a new one is a trigger (R2 d); changes are
-- recorded. status: booked | rescheduled | modified | cancelled.
CREATE TABLE appointments (
    id             INTEGER PRIMARY KEY,
    practice_id    BIGINT NOT NULL REFERENCES practices(id),
    patient_id     BIGINT NOT NULL REFERENCES patients(id),
    appointment_id TEXT NOT NULL,
    status         TEXT NOT NULL,
    starts_at      TEXT,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    UNIQUE (practice_id, appointment_id)
);
CREATE INDEX appointments_patient ON appointments (patient_id);

-- A40: the merged chart points at the surviving one; its invites,
-- deliveries, encounters and appointments move there, so the cap (R7)
-- counts both histories.
ALTER TABLE patients ADD COLUMN merged_into BIGINT REFERENCES patients(id);
