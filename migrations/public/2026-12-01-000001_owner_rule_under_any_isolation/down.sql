CREATE OR REPLACE FUNCTION memberships_keep_an_owner() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ws uuid := OLD.workspace_id;
BEGIN
    PERFORM 1 FROM workspaces WHERE id = ws FOR UPDATE;
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
