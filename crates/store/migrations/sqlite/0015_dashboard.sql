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
-- Partial indexes whose conditions are, word for word, the ones
-- `store::dashboard` counts by (`practices::INVITABLE`), so a count reads
-- only the index entries of the patients it counts.
CREATE INDEX patients_invitable ON patients (practice_id) WHERE merged_into IS NULL
    AND (activated_at IS NULL AND NOT deceased AND response IS NULL AND NOT email_opted_out);
CREATE INDEX patients_opted_out ON patients (practice_id) WHERE merged_into IS NULL
    AND (email_opted_out OR sms_opted_out);
CREATE INDEX invites_sent_by_practice ON invites (practice_id, sent_at) WHERE state = 'sent';
