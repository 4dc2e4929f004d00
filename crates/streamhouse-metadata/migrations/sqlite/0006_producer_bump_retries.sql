-- The epoch an idempotent producer's last epoch bump started from, so a
-- retried bump (its answer was lost) gets the bumped identity again.
ALTER TABLE producers ADD COLUMN last_bumped_from_epoch INTEGER;
