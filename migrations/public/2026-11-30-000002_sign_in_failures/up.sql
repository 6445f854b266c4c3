-- Failed sign-ins per account, for throttling. The key is SHA-256 of the normalized
-- email (unknown emails are counted too, so the table says nothing about who has an
-- account, and it holds no email in clear text).
CREATE TABLE sign_in_failures (
    key bytea PRIMARY KEY CHECK (octet_length(key) = 32),
    failures integer NOT NULL CHECK (failures >= 0),
    window_started_at timestamptz NOT NULL,
    blocked_until timestamptz
);
