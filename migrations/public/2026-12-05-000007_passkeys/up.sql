-- Passkeys (WebAuthn credentials). `passkey` is webauthn-rs's record of the credential:
-- its public key, signature counter and backup flags; no secret is stored.
CREATE TABLE passkeys (
    id UUID PRIMARY KEY,
    user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    credential_id BYTEA NOT NULL UNIQUE,
    name TEXT NOT NULL,
    passkey JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    last_used_at TIMESTAMPTZ
);
CREATE INDEX passkeys_user_id ON passkeys (user_id);

-- Ceremonies in progress: the challenge state, kept server-side and used at most once
-- (taken with DELETE … RETURNING). The browser holds only the row's id, in a signed cookie.
CREATE TABLE passkey_challenges (
    id UUID PRIMARY KEY,
    purpose TEXT NOT NULL CHECK (purpose IN ('register', 'sign_in', 'second_factor')),
    -- The account a registration or second step is for; none for a passkey sign-in.
    user_id UUID REFERENCES users (id) ON DELETE CASCADE,
    state JSONB NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX passkey_challenges_expires_at ON passkey_challenges (expires_at);
