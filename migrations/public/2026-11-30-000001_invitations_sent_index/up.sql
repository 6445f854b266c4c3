-- The per-workspace invitation limit counts a workspace's invitations of the last 24 hours.
CREATE INDEX invitations_workspace_id_created_at_idx ON invitations (workspace_id, created_at);
DROP INDEX invitations_workspace_id_idx;
