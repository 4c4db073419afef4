-- "Invite existing patients" at go-live (issue #14 item 2). Keep in step
-- with the other engine's 0014.

-- One run of the go-live bulk invite. state: running | paused | cancelled
-- | finished (core's GoLiveRunState). The throttle releases one chart per
-- 3600/rate_per_hour seconds while the practice's schedule is open;
-- next_release_at is when the next one is due. total: the charts listed
-- when the run started.
CREATE TABLE go_live_runs (
    id              INTEGER PRIMARY KEY,
    practice_id     BIGINT NOT NULL REFERENCES practices(id),
    state           TEXT NOT NULL,
    rate_per_hour   BIGINT NOT NULL,
    started_by      TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    next_release_at BIGINT NOT NULL,
    finished_at     BIGINT,
    total           BIGINT NOT NULL
);
-- At most one run of a practice is under way: two admins (or two
-- instances) starting at once cannot both succeed.
CREATE UNIQUE INDEX go_live_runs_one_open ON go_live_runs (practice_id)
    WHERE state IN ('running', 'paused');
CREATE INDEX go_live_runs_state ON go_live_runs (state, next_release_at);
CREATE INDEX go_live_runs_practice ON go_live_runs (practice_id, id);

-- The charts of a run in the order they are released. state: waiting |
-- invited | suppressed | skipped | cancelled (core's GoLiveItemState);
-- invite_id: the invite its turn made (sent, or suppressed by the cap);
-- note: why it was skipped, in words.
CREATE TABLE go_live_items (
    run_id     BIGINT NOT NULL REFERENCES go_live_runs(id),
    position   BIGINT NOT NULL,
    patient_id BIGINT NOT NULL REFERENCES patients(id),
    state      TEXT NOT NULL,
    invite_id  BIGINT,
    note       TEXT,
    decided_at BIGINT,
    PRIMARY KEY (run_id, position)
);
CREATE INDEX go_live_items_waiting ON go_live_items (run_id, state, position);
CREATE INDEX go_live_items_patient ON go_live_items (patient_id, state);
