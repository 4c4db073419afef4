-- The practice's phone number (E.164), shown to a patient whose link no
-- longer works ("ask your practice to send a new invitation", issue #12).
-- Keep in step with the other engine's migration of the same number.
ALTER TABLE practices ADD COLUMN phone TEXT;
