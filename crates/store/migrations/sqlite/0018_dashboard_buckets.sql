-- The dashboard's charts from rollups (issue 14 item 3): invites
-- delivered and activations per practice and 15-minute bucket of time
-- (bucket = ms since the epoch / 900000; Rust places buckets on local
-- dates, so every zone's days stay exact). Keep in step with the other
-- engine's 0018. As with the counts of 0016:
-- folded totals, and change rows the triggers only ever insert. An
-- invite counts by its own practice_id and sent_at while it is 'sent';
-- an activation by the live patient's practice and activated_at.
CREATE TABLE dashboard_buckets (
    bucket       BIGINT NOT NULL,
    practice_id  BIGINT NOT NULL,
    invites_sent BIGINT NOT NULL,
    activations  BIGINT NOT NULL,
    PRIMARY KEY (bucket, practice_id)
);
CREATE TABLE dashboard_bucket_changes (
    id           INTEGER PRIMARY KEY,
    bucket       BIGINT NOT NULL,
    practice_id  BIGINT NOT NULL,
    invites_sent BIGINT NOT NULL,
    activations  BIGINT NOT NULL
);

INSERT INTO dashboard_buckets (bucket, practice_id, invites_sent, activations)
SELECT bucket, practice_id, SUM(invites_sent), SUM(activations) FROM (
    SELECT sent_at / 900000 AS bucket, practice_id, 1 AS invites_sent, 0 AS activations
    FROM invites WHERE state = 'sent' AND sent_at IS NOT NULL
    UNION ALL
    SELECT activated_at / 900000, practice_id, 0, 1
    FROM patients WHERE merged_into IS NULL AND activated_at IS NOT NULL
) AS events GROUP BY bucket, practice_id;

CREATE TRIGGER invites_charted_insert AFTER INSERT ON invites
WHEN NEW.state = 'sent' AND NEW.sent_at IS NOT NULL BEGIN
    INSERT INTO dashboard_bucket_changes (bucket, practice_id, invites_sent, activations)
    VALUES (NEW.sent_at / 900000, NEW.practice_id, 1, 0);
END;

CREATE TRIGGER invites_charted_update AFTER UPDATE OF state, sent_at, practice_id ON invites
WHEN OLD.state = 'sent' OR NEW.state = 'sent' BEGIN
    INSERT INTO dashboard_bucket_changes (bucket, practice_id, invites_sent, activations)
    SELECT OLD.sent_at / 900000, OLD.practice_id, -1, 0
    WHERE OLD.state = 'sent' AND OLD.sent_at IS NOT NULL;
    INSERT INTO dashboard_bucket_changes (bucket, practice_id, invites_sent, activations)
    SELECT NEW.sent_at / 900000, NEW.practice_id, 1, 0
    WHERE NEW.state = 'sent' AND NEW.sent_at IS NOT NULL;
END;

CREATE TRIGGER invites_charted_delete AFTER DELETE ON invites
WHEN OLD.state = 'sent' AND OLD.sent_at IS NOT NULL BEGIN
    INSERT INTO dashboard_bucket_changes (bucket, practice_id, invites_sent, activations)
    VALUES (OLD.sent_at / 900000, OLD.practice_id, -1, 0);
END;

CREATE TRIGGER patients_charted_insert AFTER INSERT ON patients
WHEN NEW.merged_into IS NULL AND NEW.activated_at IS NOT NULL BEGIN
    INSERT INTO dashboard_bucket_changes (bucket, practice_id, invites_sent, activations)
    VALUES (NEW.activated_at / 900000, NEW.practice_id, 0, 1);
END;

CREATE TRIGGER patients_charted_update AFTER UPDATE OF activated_at, merged_into, practice_id ON patients
WHEN OLD.activated_at IS NOT NEW.activated_at OR OLD.merged_into IS NOT NEW.merged_into
    OR OLD.practice_id IS NOT NEW.practice_id BEGIN
    INSERT INTO dashboard_bucket_changes (bucket, practice_id, invites_sent, activations)
    SELECT OLD.activated_at / 900000, OLD.practice_id, 0, -1
    WHERE OLD.merged_into IS NULL AND OLD.activated_at IS NOT NULL;
    INSERT INTO dashboard_bucket_changes (bucket, practice_id, invites_sent, activations)
    SELECT NEW.activated_at / 900000, NEW.practice_id, 0, 1
    WHERE NEW.merged_into IS NULL AND NEW.activated_at IS NOT NULL;
END;

CREATE TRIGGER patients_charted_delete AFTER DELETE ON patients
WHEN OLD.merged_into IS NULL AND OLD.activated_at IS NOT NULL BEGIN
    INSERT INTO dashboard_bucket_changes (bucket, practice_id, invites_sent, activations)
    VALUES (OLD.activated_at / 900000, OLD.practice_id, 0, -1);
END;
