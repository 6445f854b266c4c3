-- The outbox mail that carries an invitation, so the pending invitations list can say
-- whether it was delivered or given up. NULL for invitations made before this column
-- (and if the mail row is ever deleted).
ALTER TABLE invitations ADD COLUMN mail_id uuid REFERENCES outbox_emails (id) ON DELETE SET NULL;

-- Mails delivered or given up before bodies were erased still hold their single-use links.
UPDATE outbox_emails SET body = '(erased after delivery)' WHERE sent_at IS NOT NULL;
UPDATE outbox_emails SET body = '(erased when the mail was given up)' WHERE sent_at IS NULL AND failed_at IS NOT NULL;
