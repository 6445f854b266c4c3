CREATE INDEX invitations_workspace_id_idx ON invitations (workspace_id);
DROP INDEX invitations_workspace_id_created_at_idx;
