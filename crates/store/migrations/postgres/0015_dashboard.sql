-- The enrollment dashboard and the CMS measure (issue 14 item 3): the
-- counts and the charts' days read these indexes instead of the tables.
CREATE INDEX patients_live ON patients (practice_id) WHERE merged_into IS NULL;
CREATE INDEX patients_activated ON patients (activated_at, practice_id)
    WHERE merged_into IS NULL AND activated_at IS NOT NULL;
CREATE INDEX invites_sent_by_patient ON invites (practice_id, patient_id) WHERE state = 'sent';
CREATE INDEX invites_sent_at ON invites (sent_at, practice_id) WHERE state = 'sent';
-- Visits of a period: by the admit time the EHR sent, or by when recorded.
CREATE INDEX encounters_admitted ON encounters (practice_id, admitted_at);
CREATE INDEX encounters_recorded ON encounters (practice_id, created_at);
