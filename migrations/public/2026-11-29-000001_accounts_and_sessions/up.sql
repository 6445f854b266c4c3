-- Accounts: one row per person. `email` keeps what the person typed (trimmed);
-- `email_normalized` (lower-cased) is what uniqueness and sign-in compare.
CREATE TABLE users (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email text NOT NULL CHECK (char_length(email) BETWEEN 3 AND 254),
    email_normalized text NOT NULL CHECK (char_length(email_normalized) BETWEEN 3 AND 254),
    display_name text NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 100),
    -- PHC string; only argon2id hashes are ever stored.
    password_hash text NOT NULL CHECK (password_hash LIKE '$argon2id$%'),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_email_normalized_key UNIQUE (email_normalized)
);

-- Server-side sessions (tower-sessions records). The key is SHA-256 of the cookie's
-- session id, so a copy of this table cannot be replayed as cookies.
CREATE TABLE sessions (
    id_hash bytea PRIMARY KEY CHECK (octet_length(id_hash) = 32),
    user_id uuid REFERENCES users (id) ON DELETE CASCADE,
    data jsonb NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);
CREATE INDEX sessions_user_id_idx ON sessions (user_id);
