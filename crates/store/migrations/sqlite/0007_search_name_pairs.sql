-- The staff search box's two-word names ("smi jo", "Smith, John"): a last
-- name prefix and a first name prefix together are one range scan of one
-- index, in either order of the two words, instead of reading every patient
-- whose last name starts with "smi" to test the first name.
-- Keep in step with the other engine's 0007.
CREATE INDEX patients_last_first_lc ON patients (last_name_lc, first_name_lc);
CREATE INDEX patients_first_last_lc ON patients (first_name_lc, last_name_lc);
