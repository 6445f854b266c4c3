-- The outbox mail that carries an invitation, so the pending invitations list can say
-- whether it was delivered or given up. NULL for invitations made before this column
-- (and if the mail row is ever deleted).
ALTER TABLE invitations ADD COLUMN mail_id uuid REFERENCES outbox_emails (id) ON DELETE SET NULL;
