-- PostgreSQL's 0020 refreshes the invite summaries once per statement
-- (its row triggers cost 0.7 ms of PL/pgSQL per invite). SQLite has no
-- statement-level triggers and its row triggers run in-process without
-- that cost, so nothing changes here; the file keeps the two engines'
-- migrations numbered alike.
SELECT 1;
