-- In-person invites (issue #12 item 5). Keep in step with the other
-- engine's 0009. (0008 is the webhooks'.)

-- The short code a patient can type at <public_url>/code instead of the
-- link: its SHA-256 only, on the link it leads to. NULL for links sent by
-- email or text. Unique, so a code leads to one link (NULLs do not clash).
ALTER TABLE activation_tokens ADD COLUMN short_code_hash TEXT;
CREATE UNIQUE INDEX activation_tokens_short_code ON activation_tokens (short_code_hash);
