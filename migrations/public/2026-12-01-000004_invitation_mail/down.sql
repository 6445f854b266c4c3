ALTER TABLE invitations DROP COLUMN mail_id;
