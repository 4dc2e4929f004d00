-- The partition counts of the subscribed topics a group's target assignment
-- was computed from ("topic:count" joined by ','), so partitions added to a
-- topic, and subscribed topics created later, are assigned at once.
ALTER TABLE consumer_groups ADD COLUMN assignment_topics TEXT NOT NULL DEFAULT '';
