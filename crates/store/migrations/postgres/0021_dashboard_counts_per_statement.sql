-- The dashboard's counts (0016) and charts (0018) kept once per statement
-- instead of once per row, as 0020 did for the invite summaries. Row by
-- row, each delivered invite updated its patient's summary and that one
-- UPDATE ran two PL/pgSQL triggers (take the old contribution away, add
-- the new) and the invite's own chart trigger: three change rows and
-- three function calls per invite, which kept delivery on PostgreSQL at
-- a quarter of its rate before the rollups (the delivery benchmark).
-- Now one trigger per INSERT or UPDATE reads the statement's rows
-- (transition tables) and writes one change row per practice (and
-- bucket) with the net difference. Deletes keep their row triggers: a
-- chart is deleted rarely and alone.

-- A patient row's dashboard contribution, times `sign`: the one place
-- this engine writes the conditions (the view below and the triggers
-- read it). A single-SELECT SQL function, so the planner inlines it.
CREATE FUNCTION dashboard_contribution(p patients, sign BIGINT) RETURNS TABLE (
    practice_id BIGINT, patients BIGINT, invitable BIGINT, missing_fields BIGINT,
    activated BIGINT, opted_out BIGINT, invited BIGINT, suppressed BIGINT, failed BIGINT
) LANGUAGE sql IMMUTABLE AS $$
    SELECT p.practice_id,
        sign * CASE WHEN p.merged_into IS NULL THEN 1 ELSE 0 END,
        sign * CASE WHEN p.merged_into IS NULL AND p.activated_at IS NULL AND NOT p.deceased
            AND p.response IS NULL AND NOT p.email_opted_out THEN 1 ELSE 0 END,
        sign * CASE WHEN p.merged_into IS NULL AND p.activated_at IS NULL AND NOT p.deceased
            AND p.response IS NULL AND NOT p.email_opted_out
            AND ((p.first_name IS NULL OR TRIM(p.first_name) = '')
              OR (p.last_name IS NULL OR TRIM(p.last_name) = '')
              OR (p.date_of_birth IS NULL OR TRIM(p.date_of_birth) = '')
              OR (p.birth_sex IS NULL OR TRIM(p.birth_sex) = '')
              OR (p.zip IS NULL OR TRIM(p.zip) = '')
              OR (p.email IS NULL OR TRIM(p.email) = '')) THEN 1 ELSE 0 END,
        sign * CASE WHEN p.merged_into IS NULL AND p.activated_at IS NOT NULL THEN 1 ELSE 0 END,
        sign * CASE WHEN p.merged_into IS NULL AND (p.email_opted_out OR p.sms_opted_out) THEN 1 ELSE 0 END,
        sign * CASE WHEN p.merged_into IS NULL AND p.first_sent_at IS NOT NULL THEN 1 ELSE 0 END,
        sign * CASE WHEN p.merged_into IS NULL AND p.activated_at IS NULL
            AND p.latest_invite_problem = 'suppressed' THEN 1 ELSE 0 END,
        sign * CASE WHEN p.merged_into IS NULL AND p.activated_at IS NULL
            AND p.latest_invite_problem = 'failed' THEN 1 ELSE 0 END
$$;

-- Its columns become BIGINT (they were integer), so the view is made again.
DROP VIEW dashboard_contributions;
CREATE VIEW dashboard_contributions AS
SELECT c.practice_id, c.patients, c.invitable, c.missing_fields, c.activated, c.opted_out,
       c.invited, c.suppressed, c.failed, p.id
FROM patients p CROSS JOIN LATERAL dashboard_contribution(p, 1) c;

-- The net change of a statement's rows (new ones counted in, old ones
-- out), one change row per practice, none when nothing moved.
CREATE FUNCTION patients_count_statement() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO dashboard_changes (practice_id, patients, invitable, missing_fields, activated, opted_out, invited, suppressed, failed)
        SELECT c.practice_id, SUM(c.patients), SUM(c.invitable), SUM(c.missing_fields), SUM(c.activated),
               SUM(c.opted_out), SUM(c.invited), SUM(c.suppressed), SUM(c.failed)
        FROM new_rows n CROSS JOIN LATERAL dashboard_contribution(n::patients, 1) c
        GROUP BY c.practice_id;
        INSERT INTO dashboard_bucket_changes (bucket, practice_id, invites_sent, activations)
        SELECT n.activated_at / 900000, n.practice_id, 0, COUNT(*) FROM new_rows n
        WHERE n.merged_into IS NULL AND n.activated_at IS NOT NULL
        GROUP BY n.activated_at / 900000, n.practice_id;
        RETURN NULL;
    END IF;
    INSERT INTO dashboard_changes (practice_id, patients, invitable, missing_fields, activated, opted_out, invited, suppressed, failed)
    SELECT c.practice_id, SUM(c.patients), SUM(c.invitable), SUM(c.missing_fields), SUM(c.activated),
           SUM(c.opted_out), SUM(c.invited), SUM(c.suppressed), SUM(c.failed)
    FROM (SELECT c.* FROM new_rows n CROSS JOIN LATERAL dashboard_contribution(n::patients, 1) c
          UNION ALL
          SELECT c.* FROM old_rows o CROSS JOIN LATERAL dashboard_contribution(o::patients, -1) c) c
    GROUP BY c.practice_id
    HAVING SUM(c.patients) <> 0 OR SUM(c.invitable) <> 0 OR SUM(c.missing_fields) <> 0
        OR SUM(c.activated) <> 0 OR SUM(c.opted_out) <> 0 OR SUM(c.invited) <> 0
        OR SUM(c.suppressed) <> 0 OR SUM(c.failed) <> 0;
    -- An activation, a merge or a move to another practice changes the
    -- patient's measure rows, as 0016's row trigger marked them.
    INSERT INTO measure_stale (patient_id)
    SELECT n.id FROM new_rows n JOIN old_rows o ON o.id = n.id
    WHERE (o.activated_at IS DISTINCT FROM n.activated_at OR o.merged_into IS DISTINCT FROM n.merged_into
           OR o.practice_id IS DISTINCT FROM n.practice_id)
        AND EXISTS (SELECT 1 FROM encounters e WHERE e.patient_id = n.id)
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;

DROP TRIGGER patients_counted_insert ON patients;
DROP TRIGGER patients_uncounted_update ON patients;
DROP TRIGGER patients_counted_update ON patients;
DROP TRIGGER patients_charted_insert ON patients;
CREATE TRIGGER patients_counted_insert AFTER INSERT ON patients
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION patients_count_statement();
CREATE TRIGGER patients_counted_update AFTER UPDATE ON patients
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION patients_count_statement();

-- An UPDATE's delivered invites in the charts: each one that stopped
-- being 'sent' (or moved) out of its old bucket, each one that became
-- 'sent' (or moved) into its new one, as 0018's row trigger did.
CREATE FUNCTION invites_chart_statement() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO dashboard_bucket_changes (bucket, practice_id, invites_sent, activations)
    SELECT m.bucket, m.practice_id, SUM(m.sent), 0 FROM (
        SELECT o.sent_at / 900000 AS bucket, o.practice_id, -1 AS sent
        FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE o.state = 'sent' AND o.sent_at IS NOT NULL
        UNION ALL
        SELECT n.sent_at / 900000, n.practice_id, 1
        FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE n.state = 'sent' AND n.sent_at IS NOT NULL) m
    GROUP BY m.bucket, m.practice_id
    HAVING SUM(m.sent) <> 0;
    RETURN NULL;
END $$;

DROP TRIGGER invites_charted_update ON invites;
CREATE TRIGGER invites_charted_update AFTER UPDATE ON invites
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION invites_chart_statement();

-- 0020's refresh named its patients only through the view, so the planner
-- joined the view's rows to a whole scan of `patients` (a hash join, 30-40
-- ms a statement at 10,000 charts; auto_explain). Naming them on the
-- updated table too makes it an index probe per patient.
CREATE OR REPLACE FUNCTION invite_summaries_refresh(patient_ids BIGINT[]) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    UPDATE patients SET first_sent_at = s.first_sent_at, latest_invite_problem = s.latest_invite_problem
    FROM invite_summaries s
    WHERE patients.id = ANY(patient_ids) AND s.patient_id = ANY(patient_ids) AND patients.id = s.patient_id
        AND (patients.first_sent_at IS DISTINCT FROM s.first_sent_at
          OR patients.latest_invite_problem IS DISTINCT FROM s.latest_invite_problem);
END $$;

-- And the first delivery as the first row of `invites_first_sent` in its
-- own order: with MIN(), statistics taken before any invite was sent
-- (a new database, a go-live) let the planner read it from
-- `invites_sent_by_practice`, filtering every delivered invite of the
-- practice for each patient, so each refresh grew with the deliveries.
CREATE OR REPLACE VIEW invite_summaries AS SELECT p.id AS patient_id,
    (SELECT i.sent_at FROM invites i WHERE i.patient_id = p.id AND i.state = 'sent'
     ORDER BY i.patient_id, i.sent_at LIMIT 1) AS first_sent_at,
    (SELECT CASE WHEN i.state IN ('suppressed', 'failed') THEN i.state END
     FROM invites i WHERE i.patient_id = p.id ORDER BY i.id DESC LIMIT 1) AS latest_invite_problem
FROM patients p;

-- Even so, with those statistics the planner took a whole scan of the
-- (believed empty) `invites_sent_by_practice` over a probe of
-- `invites_first_sent` (auto_explain: 0.3 ms a patient, growing with the
-- deliveries). The dashboard reads that index only for a range of
-- `sent_at`, which implies `sent_at IS NOT NULL`; with that in its
-- predicate the summary's lookup (which does not say it) cannot use it.
-- Same name, columns and partial flag as SQLite's.
DROP INDEX invites_sent_by_practice;
CREATE INDEX invites_sent_by_practice ON invites (practice_id, sent_at)
    WHERE state = 'sent' AND sent_at IS NOT NULL;
