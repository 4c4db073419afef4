-- The search reads each way a typed name can match on its own (see
-- SearchFilter in store/src/patients.rs): in name order from the last-name
-- index until it has a page of results, or, for a first name few patients
-- have, whole from the first-name index. Both indexes leave out merged
-- charts (which the search never shows) and carry the id and practice, so
-- either read answers from the index alone instead of visiting a table row
-- per candidate (measured on PostgreSQL at a million patients: 1,655
-- scattered row visits, 200 ms, for one "tho ro").
-- They replace the four name indexes of 0001 and 0007. With statistics,
-- SQLite skip-scanned the old (first, last) index to gather every
-- "smi..." last name and sort them, the slow plan the name order avoids.
-- Keep in step with the PostgreSQL migration of the same number.
DROP INDEX patients_last_first_lc;
DROP INDEX patients_first_last_lc;
DROP INDEX patients_last_name_lc;
DROP INDEX patients_first_name_lc;
CREATE INDEX patients_by_last_name ON patients (last_name_lc, first_name_lc, id, practice_id)
    WHERE merged_into IS NULL;
CREATE INDEX patients_by_first_name ON patients (first_name_lc, last_name_lc, id, practice_id)
    WHERE merged_into IS NULL;
