-- Which MLLP listener a message came in on ('mllp' or 'mllp-tls'), so
-- the Connections page counts each listener's messages (issue 14 item
-- 1). NULL for messages stored before this migration.
ALTER TABLE hl7_messages ADD COLUMN listener TEXT;
CREATE INDEX hl7_messages_listener ON hl7_messages (listener, received_at);
