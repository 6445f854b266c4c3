-- A mail that cannot be delivered is given up after a number of attempts, or at once when
-- the SMTP server refuses it for good (5xx), instead of being retried forever.
ALTER TABLE outbox_emails ADD COLUMN failed_at timestamptz;
DROP INDEX outbox_emails_pending_idx;
CREATE INDEX outbox_emails_pending_idx ON outbox_emails (next_attempt_at) WHERE sent_at IS NULL AND failed_at IS NULL;
