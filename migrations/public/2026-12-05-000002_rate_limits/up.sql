-- Fixed-window counters for actions limited per key (sign-ups per network and overall,
-- invitation mail per network, per recipient and overall): `fluxi_core::rate_limit`.
-- Keys are keyed pseudonyms or fixed names, never a clear identifier.
CREATE TABLE rate_limits (
    key BYTEA PRIMARY KEY,
    window_ends_at TIMESTAMPTZ NOT NULL,
    count INTEGER NOT NULL
);
CREATE INDEX rate_limits_window_ends_at ON rate_limits (window_ends_at);
