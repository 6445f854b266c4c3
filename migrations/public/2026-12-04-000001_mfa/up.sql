-- Two-factor authentication: one authenticator per account (pending until confirmed)
-- and its recovery codes. Secrets are sealed by fluxi_core::secrets; codes are keyed hashes.
CREATE TABLE mfa_totp (
    user_id uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    -- nonce ‖ ciphertext ‖ tag, bound to the account and purpose
    secret_sealed bytea NOT NULL,
    key_version integer NOT NULL,
    -- NULL while the enrolment waits for its first code
    confirmed_at timestamptz,
    pending_until timestamptz,
    -- The newest time step accepted: each step is accepted at most once, by a
    -- conditional update of this column.
    last_step bigint NOT NULL DEFAULT -1,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((confirmed_at IS NULL) <> (pending_until IS NULL))
);
CREATE INDEX mfa_totp_key_version_idx ON mfa_totp (key_version);

CREATE TABLE mfa_recovery_codes (
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash bytea NOT NULL CHECK (octet_length(code_hash) = 32),
    key_version integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, code_hash)
);

-- Owners can require two-factor authentication of every member.
ALTER TABLE workspaces ADD COLUMN require_mfa boolean NOT NULL DEFAULT false;
