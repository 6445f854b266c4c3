-- Workspace role provisioning. Run by a database administrator (a superuser), once per
-- application database and again whenever this file changes; it is idempotent:
--
--   psql "postgres://ADMIN@HOST/DATABASE" -v ON_ERROR_STOP=1 -f migrations/admin/provisioning.sql
--
-- Why: each workspace has its own database role, and the application must create and drop
-- them. On PostgreSQL 15 a role with CREATEROLE can also grant itself any non-superuser
-- role, predefined ones included (pg_read_all_data, pg_execute_server_program: shell
-- commands on the database host), so the application's login role must not have it. It
-- calls these two functions instead. They run as `fluxi_provisioner` (NOLOGIN, and no
-- role is ever made a member of it), accept only workspace role names (`ws_` + 32
-- lowercase hex digits) and can do nothing else.
--
-- The functions are granted to the database's owner: the application's login role
-- (README, "Database roles").

SET client_min_messages = warning;

DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'fluxi_provisioner') THEN
    CREATE ROLE fluxi_provisioner NOLOGIN NOINHERIT CREATEROLE;
  END IF;
END
$$;
ALTER ROLE fluxi_provisioner NOLOGIN NOINHERIT CREATEROLE NOSUPERUSER NOBYPASSRLS;

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
  app_role name := (SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database());
BEGIN
  IF (SELECT rolsuper FROM pg_roles WHERE rolname = app_role) THEN
    RAISE EXCEPTION 'the database % is owned by the superuser %: make the application''s login role its owner first',
      current_database(), app_role;
  END IF;
  EXECUTE format('GRANT USAGE ON SCHEMA fluxi_provisioning TO %I', app_role);
  EXECUTE format('GRANT EXECUTE ON FUNCTION fluxi_provisioning.create_workspace_role(text) TO %I', app_role);
  EXECUTE format('GRANT EXECUTE ON FUNCTION fluxi_provisioning.drop_workspace_role(text) TO %I', app_role);
END
$$;
