-- Workspace creations per account, for the daily cap (crates/core/src/workspaces): each
-- creation makes a schema, a database role and tables, so creating them without limit
-- is a cheap way to slow the database down for everyone. A separate log rather than a
-- column of `workspaces`, so that deleted workspaces still count. Rows older than a day
-- are deleted by the periodic clean-up.
CREATE TABLE workspace_creations (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL
);
CREATE INDEX workspace_creations_user_id_created_at_idx ON workspace_creations (user_id, created_at);
