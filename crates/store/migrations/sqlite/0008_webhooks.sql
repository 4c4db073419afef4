-- Signed webhooks to a practice's own systems (issue #12 item 4). Keep in
-- step with the other engine's 0008.

-- A practice's endpoints. The secret is kept as given (or as generated):
-- the HMAC of every request needs the secret itself, so a hash would not
-- do (see DESIGN section 6, "Webhooks"). events: a JSON array of event
-- types, e.g. ["patient.activated","invite.sent"].
CREATE TABLE webhook_endpoints (
    id          INTEGER PRIMARY KEY,
    practice_id BIGINT NOT NULL REFERENCES practices(id),
    url         TEXT NOT NULL,
    secret      TEXT NOT NULL,
    events      TEXT NOT NULL,
    enabled     BOOLEAN NOT NULL,
    created_at  BIGINT NOT NULL,
    created_by  TEXT NOT NULL
);
CREATE INDEX webhook_endpoints_practice ON webhook_endpoints (practice_id);

-- The webhooks' outbox: one row per event and endpoint, written in the
-- transaction of the change the event tells of. event_id is the event's
-- UUID (the Enroll-Delivery header). body is the JSON exactly as signed
-- and sent, the same on every attempt. state: queued | delivered | failed.
-- A sender claims a row for a while (claimed_by, claimed_until), as the
-- dispatcher does invites. Removing an endpoint removes its deliveries.
CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY,
    event_id        TEXT NOT NULL,
    endpoint_id     BIGINT NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
    event_type      TEXT NOT NULL,
    body            TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    claimed_by      TEXT,
    claimed_until   BIGINT,
    last_attempt_at BIGINT,
    last_status     BIGINT,
    last_error      TEXT,
    delivered_at    BIGINT,
    created_at      BIGINT NOT NULL,
    UNIQUE (event_id, endpoint_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at, id) WHERE state = 'queued';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, id);
