-- The dispatcher claims the oldest due invites a chunk at a time. With an
-- index on (state, due_at) each claim read and sorted every pending invite
-- (two states, so no single due_at order); this one is in claim order and
-- holds only pending invites, so a claim reads about as many rows as it
-- takes. Keep in step with the other engine's 0004.
DROP INDEX invites_due;
CREATE INDEX invites_pending ON invites (due_at, id) WHERE state IN ('scheduled', 'queued');
