-- Events recorded by actions, not yet chained (docs/audit.md, "The inbox"). An action's
-- transaction inserts its event here, so it commits or rolls back with the action without
-- taking the chain's lock or writing the partitioned table and its indexes; the sealer
-- (`fluxi_core::audit::seal`) moves committed rows into `audit_events`, chained in `id`
-- order, every second and before any read of a chain. Same columns as an event but its
-- place in the chain (`seq`, `hash`); no clear-text personal identifier either.
CREATE TABLE audit_inbox (
    id bigint GENERATED ALWAYS AS IDENTITY,
    chain_id uuid NOT NULL,
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
    outcome text NOT NULL,
    request_id uuid,
    network_pn bytea,
    agent_pn bytea,
    pseudonym_epoch integer,
    detail jsonb NOT NULL,
    PRIMARY KEY (chain_id, id)
);
