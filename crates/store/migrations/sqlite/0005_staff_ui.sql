-- The staff UI (sign-in, sessions, practice scoping, the search box).
-- Keep in step with the other engine's 0005.

-- Repeated wrong passwords lock an account for a while.
ALTER TABLE staff_users ADD COLUMN failed_sign_ins BIGINT NOT NULL DEFAULT 0;
ALTER TABLE staff_users ADD COLUMN locked_until BIGINT;

-- The practices a staff user works for. An administrator with none works
-- for every practice (the IT administrator of a single-practice install).
CREATE TABLE staff_practices (
    user_id     BIGINT NOT NULL REFERENCES staff_users(id),
    practice_id BIGINT NOT NULL REFERENCES practices(id),
    PRIMARY KEY (user_id, practice_id)
);

-- Signed-in browsers. Only the SHA-256 of the cookie's value is kept, so
-- a copy of the database signs no one in; every instance on one database
-- accepts the same sessions.
CREATE TABLE staff_sessions (
    token_hash   TEXT PRIMARY KEY,
    user_id      BIGINT NOT NULL REFERENCES staff_users(id),
    csrf_token   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL
);
CREATE INDEX staff_sessions_user ON staff_sessions (user_id);

-- The search box finds a patient by MRN, cell phone or email too.
CREATE INDEX patients_mrn ON patients (mrn);
CREATE INDEX patients_cell_phone ON patients (cell_phone);
CREATE INDEX patients_email_lc ON patients (lower(email));
