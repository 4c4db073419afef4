-- Rollups of the enrollment dashboard and the CMS measure (issue 14 item
-- 3: the page under 200 ms at a million patients). Keep in step with the
-- other engine's 0016. The conditions below are the ones of
-- `store::practices::INVITABLE` and `blank`; the test
-- `store::dashboard_rollups_match_a_recount_*` fails when they drift.

-- What a patient's invites come to, kept by the triggers on `invites`:
-- the first delivered one (for "invited" and the median time to
-- activation), and 'suppressed' or 'failed' when the latest invite is
-- held by the cap or failed (NULL otherwise).
ALTER TABLE patients ADD COLUMN first_sent_at BIGINT;
ALTER TABLE patients ADD COLUMN latest_invite_problem TEXT;

UPDATE patients SET
    first_sent_at = (SELECT MIN(i.sent_at) FROM invites i
                     WHERE i.patient_id = patients.id AND i.state = 'sent'),
    latest_invite_problem = (SELECT CASE WHEN i.state IN ('suppressed', 'failed') THEN i.state END
                             FROM invites i WHERE i.patient_id = patients.id
                             ORDER BY i.id DESC LIMIT 1);

-- The dashboard's counts of live (not merged) patients per practice:
-- the folded totals, and the changes since (one row per change, only
-- ever inserted, so concurrent changes to one practice's patients never
-- wait for each other on PostgreSQL). A count is the totals plus the
-- changes; `Store::dashboard_counts` folds the changes in now and then.
CREATE TABLE dashboard_counters (
    practice_id    BIGINT PRIMARY KEY,
    patients       BIGINT NOT NULL,
    invitable      BIGINT NOT NULL,
    missing_fields BIGINT NOT NULL,
    activated      BIGINT NOT NULL,
    opted_out      BIGINT NOT NULL,
    invited        BIGINT NOT NULL,
    suppressed     BIGINT NOT NULL,
    failed         BIGINT NOT NULL
);
CREATE TABLE dashboard_changes (
    id             INTEGER PRIMARY KEY,
    practice_id    BIGINT NOT NULL,
    patients       BIGINT NOT NULL,
    invitable      BIGINT NOT NULL,
    missing_fields BIGINT NOT NULL,
    activated      BIGINT NOT NULL,
    opted_out      BIGINT NOT NULL,
    invited        BIGINT NOT NULL,
    suppressed     BIGINT NOT NULL,
    failed         BIGINT NOT NULL
);

-- One patient row's contribution, times `sign`; the triggers below feed
-- it the old row with -1 and the new one with +1.
CREATE VIEW dashboard_contributions AS SELECT
    practice_id,
    CASE WHEN merged_into IS NULL THEN 1 ELSE 0 END AS patients,
    CASE WHEN merged_into IS NULL AND activated_at IS NULL AND NOT deceased
        AND response IS NULL AND NOT email_opted_out THEN 1 ELSE 0 END AS invitable,
    CASE WHEN merged_into IS NULL AND activated_at IS NULL AND NOT deceased
        AND response IS NULL AND NOT email_opted_out
        AND ((first_name IS NULL OR TRIM(first_name) = '')
          OR (last_name IS NULL OR TRIM(last_name) = '')
          OR (date_of_birth IS NULL OR TRIM(date_of_birth) = '')
          OR (birth_sex IS NULL OR TRIM(birth_sex) = '')
          OR (zip IS NULL OR TRIM(zip) = '')
          OR (email IS NULL OR TRIM(email) = '')) THEN 1 ELSE 0 END AS missing_fields,
    CASE WHEN merged_into IS NULL AND activated_at IS NOT NULL THEN 1 ELSE 0 END AS activated,
    CASE WHEN merged_into IS NULL AND (email_opted_out OR sms_opted_out) THEN 1 ELSE 0 END AS opted_out,
    CASE WHEN merged_into IS NULL AND first_sent_at IS NOT NULL THEN 1 ELSE 0 END AS invited,
    CASE WHEN merged_into IS NULL AND activated_at IS NULL
        AND latest_invite_problem = 'suppressed' THEN 1 ELSE 0 END AS suppressed,
    CASE WHEN merged_into IS NULL AND activated_at IS NULL
        AND latest_invite_problem = 'failed' THEN 1 ELSE 0 END AS failed,
    id
FROM patients;

INSERT INTO dashboard_counters
    (practice_id, patients, invitable, missing_fields, activated, opted_out, invited, suppressed, failed)
SELECT practice_id, SUM(patients), SUM(invitable), SUM(missing_fields), SUM(activated),
       SUM(opted_out), SUM(invited), SUM(suppressed), SUM(failed)
FROM dashboard_contributions GROUP BY practice_id;

-- The counts move by the difference a change makes: a BEFORE trigger
-- takes the row's contribution away while the row still holds its old
-- values, the AFTER trigger adds the new one. The view is the one place
-- this engine writes the conditions. Only a change to a column the view
-- reads moves anything.
CREATE TRIGGER patients_counted_insert AFTER INSERT ON patients BEGIN
    INSERT INTO dashboard_changes
        (practice_id, patients, invitable, missing_fields, activated, opted_out, invited, suppressed, failed)
    SELECT practice_id, patients, invitable, missing_fields, activated, opted_out, invited, suppressed, failed
    FROM dashboard_contributions WHERE id = NEW.id;
END;

CREATE TRIGGER patients_uncounted_update BEFORE UPDATE ON patients
WHEN OLD.practice_id IS NOT NEW.practice_id OR OLD.merged_into IS NOT NEW.merged_into
    OR OLD.activated_at IS NOT NEW.activated_at OR OLD.deceased IS NOT NEW.deceased
    OR OLD.response IS NOT NEW.response OR OLD.email_opted_out IS NOT NEW.email_opted_out
    OR OLD.sms_opted_out IS NOT NEW.sms_opted_out OR OLD.first_name IS NOT NEW.first_name
    OR OLD.last_name IS NOT NEW.last_name OR OLD.date_of_birth IS NOT NEW.date_of_birth
    OR OLD.birth_sex IS NOT NEW.birth_sex OR OLD.zip IS NOT NEW.zip OR OLD.email IS NOT NEW.email
    OR OLD.first_sent_at IS NOT NEW.first_sent_at
    OR OLD.latest_invite_problem IS NOT NEW.latest_invite_problem
BEGIN
    INSERT INTO dashboard_changes
        (practice_id, patients, invitable, missing_fields, activated, opted_out, invited, suppressed, failed)
    SELECT practice_id, -patients, -invitable, -missing_fields, -activated, -opted_out, -invited, -suppressed, -failed
    FROM dashboard_contributions WHERE id = OLD.id;
END;

CREATE TRIGGER patients_counted_update AFTER UPDATE ON patients
WHEN OLD.practice_id IS NOT NEW.practice_id OR OLD.merged_into IS NOT NEW.merged_into
    OR OLD.activated_at IS NOT NEW.activated_at OR OLD.deceased IS NOT NEW.deceased
    OR OLD.response IS NOT NEW.response OR OLD.email_opted_out IS NOT NEW.email_opted_out
    OR OLD.sms_opted_out IS NOT NEW.sms_opted_out OR OLD.first_name IS NOT NEW.first_name
    OR OLD.last_name IS NOT NEW.last_name OR OLD.date_of_birth IS NOT NEW.date_of_birth
    OR OLD.birth_sex IS NOT NEW.birth_sex OR OLD.zip IS NOT NEW.zip OR OLD.email IS NOT NEW.email
    OR OLD.first_sent_at IS NOT NEW.first_sent_at
    OR OLD.latest_invite_problem IS NOT NEW.latest_invite_problem
BEGIN
    INSERT INTO dashboard_changes
        (practice_id, patients, invitable, missing_fields, activated, opted_out, invited, suppressed, failed)
    SELECT practice_id, patients, invitable, missing_fields, activated, opted_out, invited, suppressed, failed
    FROM dashboard_contributions WHERE id = NEW.id;
    -- Activation and merges change the measure of a patient with a visit.
    INSERT INTO measure_stale (patient_id) SELECT NEW.id
        WHERE (OLD.activated_at IS NOT NEW.activated_at OR OLD.merged_into IS NOT NEW.merged_into
            OR OLD.practice_id IS NOT NEW.practice_id) AND EXISTS (SELECT 1 FROM encounters e WHERE e.patient_id = NEW.id)
        ON CONFLICT DO NOTHING;
END;

CREATE TRIGGER patients_uncounted_delete BEFORE DELETE ON patients BEGIN
    INSERT INTO dashboard_changes
        (practice_id, patients, invitable, missing_fields, activated, opted_out, invited, suppressed, failed)
    SELECT practice_id, -patients, -invitable, -missing_fields, -activated, -opted_out, -invited, -suppressed, -failed
    FROM dashboard_contributions WHERE id = OLD.id;
END;

-- A patient's first delivery by index: without it both engines may read
-- MIN(sent_at) by walking invites_sent_at until the patient's row turns up.
CREATE INDEX invites_first_sent ON invites (patient_id, sent_at) WHERE state = 'sent';

-- A patient's invite summary follows every change of an invite's state,
-- delivery time or patient (a merge moves invites to the survivor).
CREATE VIEW invite_summaries AS SELECT p.id AS patient_id,
    (SELECT MIN(i.sent_at) FROM invites i WHERE i.patient_id = p.id AND i.state = 'sent') AS first_sent_at,
    (SELECT CASE WHEN i.state IN ('suppressed', 'failed') THEN i.state END
     FROM invites i WHERE i.patient_id = p.id ORDER BY i.id DESC LIMIT 1) AS latest_invite_problem
FROM patients p;

-- Only a summary that changes touches the patient row.
CREATE TRIGGER invites_summarised_insert AFTER INSERT ON invites BEGIN
    UPDATE patients SET first_sent_at = s.first_sent_at, latest_invite_problem = s.latest_invite_problem
    FROM invite_summaries s WHERE s.patient_id = NEW.patient_id AND patients.id = NEW.patient_id
        AND (patients.first_sent_at IS NOT s.first_sent_at
          OR patients.latest_invite_problem IS NOT s.latest_invite_problem);
    -- A delivered invite changes the measure of a patient with a visit.
    INSERT INTO measure_stale (patient_id) SELECT NEW.patient_id
        WHERE NEW.state = 'sent' AND EXISTS (SELECT 1 FROM encounters e WHERE e.patient_id = NEW.patient_id)
        ON CONFLICT DO NOTHING;
END;

CREATE TRIGGER invites_summarised_update AFTER UPDATE OF state, sent_at, patient_id ON invites BEGIN
    UPDATE patients SET first_sent_at = s.first_sent_at, latest_invite_problem = s.latest_invite_problem
    FROM invite_summaries s WHERE s.patient_id = NEW.patient_id AND patients.id = NEW.patient_id
        AND (patients.first_sent_at IS NOT s.first_sent_at
          OR patients.latest_invite_problem IS NOT s.latest_invite_problem);
    UPDATE patients SET first_sent_at = s.first_sent_at, latest_invite_problem = s.latest_invite_problem
    FROM invite_summaries s WHERE s.patient_id = OLD.patient_id AND patients.id = OLD.patient_id
        AND (patients.first_sent_at IS NOT s.first_sent_at
          OR patients.latest_invite_problem IS NOT s.latest_invite_problem);
    INSERT INTO measure_stale (patient_id) SELECT NEW.patient_id
        WHERE (NEW.state = 'sent' OR OLD.state = 'sent') AND EXISTS (SELECT 1 FROM encounters e WHERE e.patient_id = NEW.patient_id)
        ON CONFLICT DO NOTHING;
    INSERT INTO measure_stale (patient_id) SELECT OLD.patient_id
        WHERE OLD.state = 'sent' AND EXISTS (SELECT 1 FROM encounters e WHERE e.patient_id = OLD.patient_id)
        ON CONFLICT DO NOTHING;
END;

CREATE TRIGGER invites_summarised_delete AFTER DELETE ON invites BEGIN
    UPDATE patients SET first_sent_at = s.first_sent_at, latest_invite_problem = s.latest_invite_problem
    FROM invite_summaries s WHERE s.patient_id = OLD.patient_id AND patients.id = OLD.patient_id
        AND (patients.first_sent_at IS NOT s.first_sent_at
          OR patients.latest_invite_problem IS NOT s.latest_invite_problem);
    INSERT INTO measure_stale (patient_id) SELECT OLD.patient_id
        WHERE OLD.state = 'sent' AND EXISTS (SELECT 1 FROM encounters e WHERE e.patient_id = OLD.patient_id)
        ON CONFLICT DO NOTHING;
END;

-- The median time to activation reads activated patients with their
-- first delivery from this index alone (it replaces 0015's
-- patients_activated, of which it is an extension).
DROP INDEX patients_activated;
CREATE INDEX patients_activated ON patients (activated_at, practice_id, first_sent_at)
    WHERE merged_into IS NULL AND activated_at IS NOT NULL;

-- The CMS measure per visit: a patient's visit on a local date of the
-- practice, and whether access was given by its deadline (core's
-- `measure::visit_is_timely`). Computed in Rust (the dates need the
-- practice's zone and closed dates) by `Store::refresh_measure` for the
-- patients listed in measure_stale, which the triggers below fill when a
-- patient's visits, delivered invites or activation change. A patient is
-- in the numerator of a period when any of their visits in it is timely.
CREATE TABLE measure_visits (
    practice_id BIGINT NOT NULL,
    visit_date  TEXT NOT NULL,
    patient_id  BIGINT NOT NULL,
    timely      BOOLEAN NOT NULL,
    PRIMARY KEY (practice_id, visit_date, patient_id)
);
CREATE INDEX measure_visits_patient ON measure_visits (patient_id);

CREATE TABLE measure_stale (
    patient_id BIGINT PRIMARY KEY
);

-- The zone and closed dates a practice's rows were computed with; when
-- the schedule's differ, the practice's rows are computed again.
CREATE TABLE measure_built (
    practice_id BIGINT PRIMARY KEY,
    fingerprint TEXT NOT NULL
);

CREATE TRIGGER encounters_measure_insert AFTER INSERT ON encounters BEGIN
    INSERT INTO measure_stale (patient_id) VALUES (NEW.patient_id) ON CONFLICT DO NOTHING;
END;

CREATE TRIGGER encounters_measure_update AFTER UPDATE OF patient_id, practice_id, admitted_at, created_at ON encounters BEGIN
    INSERT INTO measure_stale (patient_id) VALUES (NEW.patient_id) ON CONFLICT DO NOTHING;
    INSERT INTO measure_stale (patient_id) VALUES (OLD.patient_id) ON CONFLICT DO NOTHING;
END;

CREATE TRIGGER encounters_measure_delete AFTER DELETE ON encounters BEGIN
    INSERT INTO measure_stale (patient_id) VALUES (OLD.patient_id) ON CONFLICT DO NOTHING;
END;
