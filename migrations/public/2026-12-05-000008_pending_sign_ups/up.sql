-- Sign-ups waiting for their address to be proven. Nothing becomes an account until the
-- link mailed to the address is opened and the sign-up's password given again, so a
-- sign-up never reveals whether an address has an account, and nobody can create an
-- account at an address they cannot read. None reserves its address: several may wait
-- for one, and the first confirmed wins. Only the SHA-256 of the link's token is stored.
CREATE TABLE pending_sign_ups (
    token_hash BYTEA PRIMARY KEY,
    email TEXT NOT NULL,
    email_normalized TEXT NOT NULL,
    display_name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    -- Passwords tried with the link, right or wrong; at the limit it stops working.
    password_attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX pending_sign_ups_email_normalized ON pending_sign_ups (email_normalized);
CREATE INDEX pending_sign_ups_expires_at ON pending_sign_ups (expires_at);
