-- The invite summary of 0016, refreshed once per statement instead of once
-- per invite row. Row by row, every invite whose state changed ran
-- `invite_summary_refresh` through PL/pgSQL (0.65-0.76 ms each), and the
-- dispatcher's statement that records the outcome of 50 invites took
-- 60-70 ms: delivery on PostgreSQL fell to a fifth (the delivery
-- benchmark; found with pg_stat_statements). Now one trigger per UPDATE
-- reads the statement's old and new rows (transition tables) and
-- refreshes the summaries of the patients whose invites changed state,
-- sending time or patient in one set-based UPDATE, and marks their
-- measure when a delivered invite came or went, as the row trigger did.
-- A transition table cannot go with a column list (`UPDATE OF ...`), so
-- the trigger fires for every UPDATE of invites and itself keeps the
-- rows that changed what the summary reads. SQLite keeps its row
-- triggers (they run in-process, without this cost); the name is the
-- same on both engines.
DROP TRIGGER invites_summarised_update ON invites;

CREATE FUNCTION invite_summaries_refresh(patient_ids BIGINT[]) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    UPDATE patients SET first_sent_at = s.first_sent_at, latest_invite_problem = s.latest_invite_problem
    FROM invite_summaries s WHERE s.patient_id = ANY(patient_ids) AND patients.id = s.patient_id
        AND (patients.first_sent_at IS DISTINCT FROM s.first_sent_at
          OR patients.latest_invite_problem IS DISTINCT FROM s.latest_invite_problem);
END $$;

CREATE FUNCTION invites_summarise_statement() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM invite_summaries_refresh(ARRAY(
        SELECT n.patient_id FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE n.state IS DISTINCT FROM o.state OR n.sent_at IS DISTINCT FROM o.sent_at
            OR n.patient_id <> o.patient_id
        UNION
        SELECT o.patient_id FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE n.patient_id <> o.patient_id));
    INSERT INTO measure_stale (patient_id)
    SELECT d.patient_id FROM (
        SELECT n.patient_id FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE (n.state = 'sent' OR o.state = 'sent')
            AND (n.state IS DISTINCT FROM o.state OR n.sent_at IS DISTINCT FROM o.sent_at
                OR n.patient_id <> o.patient_id)
        UNION
        SELECT o.patient_id FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE n.patient_id <> o.patient_id AND o.state = 'sent') d
    WHERE EXISTS (SELECT 1 FROM encounters e WHERE e.patient_id = d.patient_id)
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;

CREATE TRIGGER invites_summarised_update AFTER UPDATE ON invites
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION invites_summarise_statement();
