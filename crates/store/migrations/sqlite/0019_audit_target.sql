-- What an audit line is about (issue 10 item 6): a patient, practice,
-- message, search, staff user... (`target_type`) and its id, written in
-- the transaction of the change it records. `patient_id` stays for the
-- readers that filter by patient; old lines about a patient get that
-- patient as their target. No index: the audit pages filter by
-- patient_id (index audit_log_patient), not by target. Keep in step with
-- the other engine's 0019.
ALTER TABLE audit_log ADD COLUMN target_type TEXT;
ALTER TABLE audit_log ADD COLUMN target_id BIGINT;
UPDATE audit_log SET target_type = 'patient', target_id = patient_id WHERE patient_id IS NOT NULL;
