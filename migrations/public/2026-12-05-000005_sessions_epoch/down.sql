ALTER TABLE users DROP COLUMN sessions_epoch;
