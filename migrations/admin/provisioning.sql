-- Workspace role provisioning. Run by a database administrator (a superuser), once per
-- application database and again whenever this file changes; it is idempotent:
--
--   psql "postgres://ADMIN@HOST/DATABASE" -1 -v ON_ERROR_STOP=1 -f migrations/admin/provisioning.sql
--
-- Why: each workspace has its own database role, and the application must create and drop
-- them. On PostgreSQL 15 a role with CREATEROLE can also grant itself any non-superuser
-- role, predefined ones included (pg_read_all_data, pg_execute_server_program: shell
-- commands on the database host), so the application's login role must not have it. It
-- calls these two functions instead. They run as `fluxi_provisioner` (NOLOGIN, and no
-- role may be a member of it: this file refuses to go on if one is), accept only
-- workspace role names (`ws_` + 32 lowercase hex digits) and can do nothing else.
--
-- The functions are granted to the database's owner: the application's login role
-- (docs/operations.md, "Database roles").

SET client_min_messages = warning;
-- This runs as a superuser inside a database whose `public` schema the application role
-- owns, and that role (as database owner) may also set the database's default search
-- path: a function it put in `public` (say a better-matching `format(text, name)`) would
-- run here as the superuser. So nothing but the system catalogs is on the path.
SET search_path = pg_catalog, pg_temp;

DO $$
DECLARE
  members text;
BEGIN
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'fluxi_provisioner') THEN
    CREATE ROLE fluxi_provisioner NOLOGIN NOINHERIT CREATEROLE;
  ELSE
    -- No role may become the provisioner (it has CREATEROLE). A member here was not put
    -- there by this file: someone should look before it is trusted again.
    SELECT pg_catalog.string_agg(pg_catalog.pg_get_userbyid(member), ', ') INTO members
      FROM pg_catalog.pg_auth_members WHERE roleid = 'fluxi_provisioner'::pg_catalog.regrole;
    IF members IS NOT NULL THEN
      RAISE EXCEPTION 'roles % are members of fluxi_provisioner; revoke that (and find out how it happened) first', members;
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'fluxi_provisioner'
               AND (rolcanlogin OR rolinherit OR NOT rolcreaterole OR rolsuper OR rolbypassrls OR rolcreatedb OR rolreplication)) THEN
      ALTER ROLE fluxi_provisioner NOLOGIN NOINHERIT CREATEROLE NOSUPERUSER NOBYPASSRLS NOCREATEDB NOREPLICATION;
    END IF;
  END IF;
  -- A schema of this name made by someone else may hold their objects; refuse to trust it.
  -- (Owned by the provisioner or a superuser: made by this file, perhaps in a run that
  -- stopped half-way.)
  IF EXISTS (SELECT FROM pg_catalog.pg_namespace n WHERE n.nspname = 'fluxi_provisioning'
             AND (NOT EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.oid = n.nspowner
                              AND (r.rolname = 'fluxi_provisioner' OR r.rolsuper))
                  OR EXISTS (SELECT FROM pg_catalog.pg_proc p WHERE p.pronamespace = n.oid
                             AND NOT EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.oid = p.proowner
                                             AND (r.rolname = 'fluxi_provisioner' OR r.rolsuper)))
                  OR EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.relnamespace = n.oid))) THEN
    RAISE EXCEPTION 'schema fluxi_provisioning exists with an owner or objects this file did not make; drop it (DROP SCHEMA fluxi_provisioning CASCADE) and run this file again';
  END IF;
END
$$;

CREATE SCHEMA IF NOT EXISTS fluxi_provisioning AUTHORIZATION fluxi_provisioner;
ALTER SCHEMA fluxi_provisioning OWNER TO fluxi_provisioner;
REVOKE ALL ON SCHEMA fluxi_provisioning FROM PUBLIC;

-- Creates the workspace role `name` and makes the caller's login role a member of it
-- (so it can `SET ROLE` to it; the login role is NOINHERIT, so membership alone gives it
-- nothing). Transactional: rolled back with the workspace creation that called it.
CREATE OR REPLACE FUNCTION fluxi_provisioning.create_workspace_role(name text) RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  IF name IS NULL OR name !~ '^ws_[0-9a-f]{32}$' THEN
    RAISE EXCEPTION 'not a workspace role name: %', name USING ERRCODE = 'invalid_parameter_value';
  END IF;
  EXECUTE format('CREATE ROLE %I NOLOGIN NOINHERIT', name);
  EXECUTE format('GRANT %I TO %I', name, session_user);
END
$fn$;

-- Drops the workspace role `name`. The caller drops the workspace's schema first (as that
-- role); a role that still owns or may use anything cannot be dropped, and the error says so.
CREATE OR REPLACE FUNCTION fluxi_provisioning.drop_workspace_role(name text) RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  IF name IS NULL OR name !~ '^ws_[0-9a-f]{32}$' THEN
    RAISE EXCEPTION 'not a workspace role name: %', name USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = name AND NOT rolcanlogin AND NOT rolsuper) THEN
    RAISE EXCEPTION 'no workspace role %', name USING ERRCODE = 'undefined_object';
  END IF;
  EXECUTE format('DROP ROLE %I', name);
END
$fn$;

ALTER FUNCTION fluxi_provisioning.create_workspace_role(text) OWNER TO fluxi_provisioner;
ALTER FUNCTION fluxi_provisioning.drop_workspace_role(text) OWNER TO fluxi_provisioner;
REVOKE ALL ON FUNCTION fluxi_provisioning.create_workspace_role(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION fluxi_provisioning.drop_workspace_role(text) FROM PUBLIC;

DO $$
DECLARE
  app_role name := (SELECT pg_catalog.pg_get_userbyid(datdba) FROM pg_catalog.pg_database
                    WHERE datname = pg_catalog.current_database());
BEGIN
  IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = app_role) THEN
    RAISE EXCEPTION 'the database % is owned by the superuser %: make the application''s login role its owner first',
      pg_catalog.current_database(), app_role;
  END IF;
  -- Usage of the schema and the two functions, nothing more (earlier grants are reset).
  EXECUTE pg_catalog.format('REVOKE ALL ON SCHEMA fluxi_provisioning FROM %I', app_role);
  EXECUTE pg_catalog.format('GRANT USAGE ON SCHEMA fluxi_provisioning TO %I', app_role);
  EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION fluxi_provisioning.create_workspace_role(text) TO %I', app_role);
  EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION fluxi_provisioning.drop_workspace_role(text) TO %I', app_role);
END
$$;

RESET search_path;
