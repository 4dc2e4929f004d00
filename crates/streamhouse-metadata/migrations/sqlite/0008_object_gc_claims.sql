-- The object GC claims an object in this table before deleting it, so a
-- commit that would reference it fails on the object's key instead.
-- 0: recorded by a commit; 1: committed, no longer referenced, claimed for
-- deletion; 2: never committed, claimed (a tombstone kept so that no later
-- commit of that key can succeed).
ALTER TABLE objects ADD COLUMN gc_state INTEGER NOT NULL DEFAULT 0;
