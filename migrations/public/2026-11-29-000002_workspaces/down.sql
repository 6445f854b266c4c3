DROP TABLE outbox_emails;
DROP TABLE invitations;
DROP TRIGGER workspace_keeps_an_owner ON memberships;
DROP FUNCTION memberships_keep_an_owner();
DROP TABLE memberships;
DROP TABLE workspaces;
