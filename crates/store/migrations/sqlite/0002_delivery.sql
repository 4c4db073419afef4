-- Delivery of invites (the dispatcher). Keep in step with the other engine's 0002.

-- A dispatcher claims an invite for a while (a lease); another instance
-- may take it over only once the lease has run out.
ALTER TABLE invites ADD COLUMN claimed_by TEXT;
ALTER TABLE invites ADD COLUMN claimed_until BIGINT;
ALTER TABLE invites ADD COLUMN last_attempt_at BIGINT;
CREATE INDEX invites_failed ON invites (state, sent_at);

-- One row per channel per attempt: what was handed to which address and
-- what came of it. state: sending | sent | transient_failure |
-- permanent_failure | interrupted (the process stopped mid-send).
CREATE TABLE deliveries (
    id          INTEGER PRIMARY KEY,
    invite_id   BIGINT NOT NULL REFERENCES invites(id),
    patient_id  BIGINT NOT NULL REFERENCES patients(id),
    channel     TEXT NOT NULL,
    address     TEXT NOT NULL,
    attempt     BIGINT NOT NULL,
    state       TEXT NOT NULL,
    provider_id TEXT,
    error       TEXT,
    started_at  BIGINT NOT NULL,
    finished_at BIGINT
);
CREATE INDEX deliveries_invite ON deliveries (invite_id, id);
CREATE INDEX deliveries_address ON deliveries (channel, address, started_at);

-- Activation links (R10): only the SHA-256 of the token is kept.
CREATE TABLE activation_tokens (
    id         INTEGER PRIMARY KEY,
    patient_id BIGINT NOT NULL REFERENCES patients(id),
    invite_id  BIGINT NOT NULL REFERENCES invites(id),
    token_hash TEXT NOT NULL UNIQUE,
    sent_to    TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT,
    failures   BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX activation_tokens_patient ON activation_tokens (patient_id);
