-- The server-side assignor each consumer group member asked for
-- ('uniform' or 'range'); a group uses the one most of its members ask for.
ALTER TABLE group_members ADD COLUMN assignor TEXT NOT NULL DEFAULT 'uniform';
