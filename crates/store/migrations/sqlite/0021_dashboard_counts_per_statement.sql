-- PostgreSQL's 0021 keeps the dashboard's counts and charts once per
-- statement (its row triggers cost three PL/pgSQL calls per delivered
-- invite). SQLite has no statement-level triggers and its row triggers
-- run in-process without that cost, so nothing changes here; the file
-- keeps the two engines' migrations numbered alike.
SELECT 1;
