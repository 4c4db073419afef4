-- What intake had to do to keep a message faithfully, in words for staff:
-- e.g. a NUL character in MSH-10, which a database text column cannot
-- hold, stored as the HL7 escape \X00\ (the raw bytes keep the byte).
-- NULL when nothing needed saying (issue 13). Keep in step with the other
-- engine's migration of the same number.
ALTER TABLE hl7_messages ADD COLUMN notes TEXT;
