-- The owner rule must hold whatever isolation level the racing transactions use.
-- Locking the workspace row (`SELECT … FOR UPDATE`) serialized two demotions only under
-- READ COMMITTED, where the second one's check takes a fresh snapshot after waiting.
-- Under REPEATABLE READ the second check still read its old snapshot, saw the other
-- owner, and both demotions committed: no owner left. Writing the workspace row instead
-- makes the second transaction wait and then either re-check with a fresh snapshot
-- (READ COMMITTED) or fail with a serialization error (REPEATABLE READ, SERIALIZABLE),
-- since PostgreSQL does not let it update a row changed after its snapshot.
CREATE OR REPLACE FUNCTION memberships_keep_an_owner() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ws uuid := OLD.workspace_id;
BEGIN
    -- A no-op write that still makes a new row version (see above).
    UPDATE workspaces SET name = name WHERE id = ws;
    -- The workspace itself is being deleted: nothing to keep.
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM memberships WHERE workspace_id = ws AND role = 'owner') THEN
        RAISE EXCEPTION 'a workspace must keep at least one owner'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'workspace_keeps_an_owner';
    END IF;
    RETURN NULL;
END;
$$;
