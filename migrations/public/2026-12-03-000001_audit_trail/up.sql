-- The security audit trail (docs/audit.md). Events live outside the workspace schemas so
-- that they outlive a deleted workspace until their retention ends; reads are scoped in
-- the domain library (`fluxi_core::audit`) to the workspace's own owners and admins.

-- One hash chain per workspace, and one for account-level events (the nil uuid). Appending
-- locks the chain's row, so writers to one chain queue and never fork it, while other
-- chains are untouched. `last_at` keeps each chain's times in order.
CREATE TABLE audit_chains (
    chain_id uuid PRIMARY KEY,
    last_seq bigint NOT NULL DEFAULT 0 CHECK (last_seq >= 0),
    last_hash bytea NOT NULL DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000'
        CHECK (octet_length(last_hash) = 32),
    last_at timestamptz NOT NULL DEFAULT '-infinity'
);
INSERT INTO audit_chains (chain_id) VALUES ('00000000-0000-0000-0000-000000000000');
INSERT INTO audit_chains (chain_id) SELECT id FROM workspaces;

-- Monthly partitions (created ahead by the server, `fluxi_core::audit::maintenance`):
-- pruning a month drops a table. No clear-text personal identifier: emails, networks and
-- user agents are keyed pseudonyms (`*_pn`) of the key epoch `pseudonym_epoch`.
CREATE TABLE audit_events (
    chain_id uuid NOT NULL,
    seq bigint NOT NULL,
    occurred_at timestamptz NOT NULL,
    workspace_id uuid,
    account_id uuid,
    actor_kind text NOT NULL,
    actor_id uuid,
    actor_email_pn bytea,
    action text NOT NULL,
    action_group text NOT NULL,
    target_kind text NOT NULL,
    target_id uuid,
    outcome text NOT NULL CHECK (outcome IN ('succeeded', 'denied', 'failed')),
    request_id uuid,
    network_pn bytea,
    agent_pn bytea,
    pseudonym_epoch integer,
    detail jsonb NOT NULL,
    hash bytea NOT NULL CHECK (octet_length(hash) = 32),
    -- Unique per partition (a key must include the partition column); that (chain, seq)
    -- is unique overall follows from the writer, and `verify` checks it.
    PRIMARY KEY (chain_id, seq, occurred_at)
) PARTITION BY RANGE (occurred_at);

-- Every viewer query is "this chain, newest first (by seq), maybe one more equality"
-- (the unfiltered one uses the primary key).
CREATE INDEX audit_events_action_idx ON audit_events (chain_id, action, seq);
CREATE INDEX audit_events_group_idx ON audit_events (chain_id, action_group, seq);
CREATE INDEX audit_events_actor_idx ON audit_events (chain_id, actor_id, seq);
CREATE INDEX audit_events_actor_email_idx ON audit_events (chain_id, actor_email_pn, seq);
CREATE INDEX audit_events_network_idx ON audit_events (chain_id, network_pn, seq);
CREATE INDEX audit_events_time_idx ON audit_events (chain_id, occurred_at, seq);
CREATE INDEX audit_events_account_idx ON audit_events (account_id, seq) WHERE account_id IS NOT NULL;

-- Where a pruned chain now starts: the last removed event, signed, so the rest verifies
-- and an anchor moved by hand does not.
CREATE TABLE audit_anchors (
    chain_id uuid PRIMARY KEY,
    seq bigint NOT NULL,
    hash bytea NOT NULL CHECK (octet_length(hash) = 32),
    pruned_before timestamptz NOT NULL,
    signature bytea NOT NULL
);

-- Signed statements of the chain heads that moved since the previous one (Ed25519, key
-- outside the database); `body` is exactly the signed text. `audit_checkpoint_heads`
-- indexes the bodies by chain; only the signed body is trusted.
CREATE TABLE audit_checkpoints (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at timestamptz NOT NULL,
    body text NOT NULL,
    signature bytea NOT NULL CHECK (octet_length(signature) = 64)
);
CREATE TABLE audit_checkpoint_heads (
    chain_id uuid NOT NULL,
    checkpoint_id bigint NOT NULL REFERENCES audit_checkpoints (id) ON DELETE CASCADE,
    seq bigint NOT NULL,
    hash bytea NOT NULL,
    PRIMARY KEY (chain_id, checkpoint_id)
);

-- This month's partition and the next two; the server keeps creating them ahead
-- (`fluxi_core::audit::maintenance::ensure_partitions`, same names and bounds).
DO $$
DECLARE
    start date := date_trunc('month', now() AT TIME ZONE 'UTC')::date;
BEGIN
    FOR i IN 0..2 LOOP
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF audit_events FOR VALUES FROM (%L) TO (%L)',
            'audit_events_p' || to_char(start + make_interval(months => i), 'YYYYMM'),
            to_char(start + make_interval(months => i), 'YYYY-MM-DD') || ' 00:00:00+00',
            to_char(start + make_interval(months => i + 1), 'YYYY-MM-DD') || ' 00:00:00+00');
    END LOOP;
END $$;
