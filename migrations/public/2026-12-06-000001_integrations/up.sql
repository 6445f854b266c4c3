-- OAuth connections under way: the state (as a hash) a callback must bring back, bound
-- to the session, person and workspace that started it; single use, 10 minutes.
CREATE TABLE integration_authorizations (
    state_hash bytea PRIMARY KEY CHECK (octet_length(state_hash) = 32),
    session_hash bytea NOT NULL CHECK (octet_length(session_hash) = 32),
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    provider text NOT NULL,
    scopes text[] NOT NULL,
    key_version integer NOT NULL,
    pkce_verifier bytea NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX integration_authorizations_expiry ON integration_authorizations (expires_at);

-- Tokens of disconnected connections waiting to be revoked at their provider: kept
-- (sealed, as they were) only for that, deleted on success or at give_up_at. Outside the
-- tenant schemas on purpose: a deleted workspace's tokens must still be revoked.
CREATE TABLE integration_revocations (
    id uuid PRIMARY KEY,
    workspace_id uuid NOT NULL,
    owner_id uuid NOT NULL,
    connection_id uuid NOT NULL,
    provider text NOT NULL,
    key_version integer NOT NULL,
    access_token bytea,
    refresh_token bytea,
    account bytea,
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    give_up_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX integration_revocations_due ON integration_revocations (next_attempt_at);
