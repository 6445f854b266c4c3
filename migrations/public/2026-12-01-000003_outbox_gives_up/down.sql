DROP INDEX outbox_emails_pending_idx;
ALTER TABLE outbox_emails DROP COLUMN failed_at;
CREATE INDEX outbox_emails_pending_idx ON outbox_emails (next_attempt_at) WHERE sent_at IS NULL;
