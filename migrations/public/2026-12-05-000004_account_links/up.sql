-- Whether the account proved it receives mail at its address (email verification).
-- Accounts from before verification existed start unverified: nothing vouched for them.
ALTER TABLE users ADD COLUMN email_verified_at TIMESTAMPTZ;

-- Single-use links mailed to an account: verify the email, reset the password.
-- Only the SHA-256 of a token is stored; reading the table yields no usable link.
CREATE TABLE account_links (
    token_hash BYTEA PRIMARY KEY,
    user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose TEXT NOT NULL CHECK (purpose IN ('verify_email', 'reset_password')),
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    used_at TIMESTAMPTZ,
    -- A newer link of the same purpose replaced this one (it no longer works).
    replaced_at TIMESTAMPTZ
);
CREATE INDEX account_links_user_purpose ON account_links (user_id, purpose);
CREATE INDEX account_links_expires_at ON account_links (expires_at);
