-- Patient activation (R10). Keep in step with the other engine's 0006.
-- (0005 is the staff UI's.)

-- A merge voids the merged chart's links (they move to the survivor, as
-- the rest of its history does, but no longer work).
ALTER TABLE activation_tokens ADD COLUMN revoked_at BIGINT;

-- One activation in progress per link: the step reached, a random flow
-- secret (its SHA-256) that every form echoes (CSRF, and proof that this
-- browser passed the identity check), the account chosen and the one-time
-- code (hashes only).
-- step: identity | account | code
CREATE TABLE activation_flows (
    id             INTEGER PRIMARY KEY,
    token_id       BIGINT NOT NULL UNIQUE REFERENCES activation_tokens(id),
    secret_hash    TEXT NOT NULL,
    step           TEXT NOT NULL,
    username       TEXT,
    password_hash  TEXT,
    code_hash      TEXT,
    code_sent_at   BIGINT,
    code_failures  BIGINT NOT NULL DEFAULT 0,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);

-- The portal account a patient made. username is stored lowercased.
CREATE TABLE patient_accounts (
    id                INTEGER PRIMARY KEY,
    patient_id        BIGINT NOT NULL UNIQUE REFERENCES patients(id),
    username          TEXT NOT NULL UNIQUE,
    password_hash     TEXT NOT NULL,
    terms_accepted_at BIGINT NOT NULL,
    created_at        BIGINT NOT NULL
);

-- Patient sign-in sessions: only the SHA-256 of the cookie's value (the
-- forms' CSRF value is derived from the cookie, so it needs no column).
CREATE TABLE patient_sessions (
    id           INTEGER PRIMARY KEY,
    account_id   BIGINT NOT NULL REFERENCES patient_accounts(id),
    session_hash TEXT NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
