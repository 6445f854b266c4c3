-- Connections to third-party tools: one per person and provider in this workspace.
-- Here, in the workspace's schema, so only the workspace's role reaches them and
-- dropping the schema destroys them (docs/integrations.md). Every secret is sealed by
-- the encryption module, bound to (workspace, owner, connection); `key_version` is the
-- key that sealed all of this row's secrets.
CREATE TABLE integration_connections (
    id uuid PRIMARY KEY,
    provider text NOT NULL CHECK (provider ~ '^[a-z0-9-]{1,40}$'),
    owner_id uuid NOT NULL,
    kind text NOT NULL CHECK (kind IN ('oauth2', 'api_key')),
    status text NOT NULL DEFAULT 'connected' CHECK (status IN ('connected', 'needs_reconnect')),
    key_version integer NOT NULL,
    account bytea,
    access_token bytea,
    refresh_token bytea,
    api_key bytea,
    key_last4 text CHECK (char_length(key_last4) <= 4),
    scopes text[] NOT NULL DEFAULT '{}',
    access_expires_at timestamptz,
    refresh_lease uuid,
    refresh_lease_until timestamptz,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    updated_by uuid NOT NULL,
    last_used_at timestamptz,
    UNIQUE (owner_id, provider),
    CHECK (kind <> 'api_key' OR api_key IS NOT NULL),
    CHECK (kind <> 'oauth2' OR api_key IS NULL)
);
