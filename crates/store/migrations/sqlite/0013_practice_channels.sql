-- The Integration Tool's channel switches (issue #14): whether the
-- practice's invites go by email and by text message. Both on by default,
-- as before; at least one stays on (checked where they are set).
-- Keep in step with the other engine's migration of the same number.
ALTER TABLE practices ADD COLUMN email_on BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE practices ADD COLUMN sms_on BOOLEAN NOT NULL DEFAULT TRUE;
