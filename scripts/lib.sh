# Shared helpers for scripts/run, scripts/test and scripts/bench. Source, don't run.
# Every `ensure_*` installs what is missing and skips what is already there.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$ROOT/node_modules/.bin:$HOME/.cargo/bin:$PATH"
# Leptos reads this at compile time (to name the wasm file). cargo-leptos sets it; set it
# for plain cargo (tests) too, or `cargo test` rebuilds leptos and the server binary with
# a different wasm name, and both builds keep invalidating each other.
export LEPTOS_OUTPUT_NAME=fluxi

CARGO_LEPTOS_VERSION="0.3.10"
DIESEL_CLI_VERSION="2.3.14"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  log "installing Debian packages: $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1 || {
    as_root apt-get update >/dev/null 2>&1
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >/dev/null
  }
}

# The wasm-bindgen version pinned (`=X`) in Cargo.toml; the CLI must match it exactly.
wasm_bindgen_version() {
  sed -n 's/^wasm-bindgen = "=\([0-9.]*\)".*/\1/p' "$ROOT/Cargo.toml"
}

ensure_build_tools() {
  # webauthn-rs (passkeys) checks signatures with OpenSSL: headers and pkg-config to build.
  if ! pkg-config --exists openssl 2>/dev/null; then apt_install libssl-dev pkg-config; fi
  if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    log "adding the wasm32-unknown-unknown target"
    rustup target add wasm32-unknown-unknown
  fi
  if ! cargo leptos --version 2>/dev/null | grep -q "$CARGO_LEPTOS_VERSION"; then
    log "installing cargo-leptos $CARGO_LEPTOS_VERSION (takes ~13 minutes on 2 cores, once per machine)"
    cargo install "cargo-leptos@$CARGO_LEPTOS_VERSION" --locked --features no_downloads
  fi
  local wb; wb="$(wasm_bindgen_version)"
  if ! wasm-bindgen --version 2>/dev/null | grep -q " $wb\$"; then
    log "installing wasm-bindgen-cli $wb"
    # Not --locked: its lock file names a crate version this registry lacks.
    cargo install "wasm-bindgen-cli@$wb"
  fi
  if [ ! -x "$ROOT/node_modules/.bin/tailwindcss" ] || [ ! -x "$ROOT/node_modules/.bin/wasm-opt" ] \
     || [ ! -x "$ROOT/node_modules/.bin/playwright" ] || [ ! -d "$ROOT/node_modules/oidc-provider" ] \
     || [ "$ROOT/package-lock.json" -nt "$ROOT/node_modules/.package-lock.json" ]; then
    log "installing npm packages (Tailwind, wasm-opt, Playwright, axe, oidc-provider) from package-lock.json"
    npm ci --no-audit --no-fund >/dev/null
  fi
  ensure_postgres
}

ensure_postgres() {
  if [ ! -x "$PG_BIN/initdb" ]; then
    apt_install postgresql-15 postgresql-contrib
  fi
}

ensure_test_tools() {
  ensure_build_tools
  if ! cargo fmt --version >/dev/null 2>&1; then
    log "adding rustfmt"
    rustup component add rustfmt
  fi
  if [ ! -x /usr/bin/chromium ]; then apt_install chromium; fi
  if [ ! -f /usr/include/postgresql/libpq-fe.h ]; then apt_install libpq-dev; fi
  if ! diesel --version 2>/dev/null | grep -q "$DIESEL_CLI_VERSION"; then
    log "installing diesel_cli $DIESEL_CLI_VERSION (schema drift check)"
    cargo install "diesel_cli@$DIESEL_CLI_VERSION" --locked --no-default-features --features postgres
  fi
}

# Runs a command as the PostgreSQL system user (initdb/postgres refuse to run as root).
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# pg_start DIR PORT: starts (creating on first use) a private cluster in DIR listening on
# 127.0.0.1:PORT and a socket inside DIR. Prints the superuser's connection URL base
# (postgres://fluxi:PASSWORD@127.0.0.1:PORT).
pg_start() {
  local dir="$1" port="$2"
  mkdir -p "$dir"
  local data="$dir/data" sock="$dir/socket" pwfile="$dir/password"
  if [ ! -f "$pwfile" ]; then
    umask 077
    head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$pwfile"
  fi
  if [ "$(id -u)" = 0 ]; then chown postgres "$dir" && chmod 700 "$dir"; fi
  if [ ! -f "$data/PG_VERSION" ]; then
    log "initialising a private PostgreSQL cluster in $data"
    local tmp_pw; tmp_pw="$(mktemp)"; cp "$pwfile" "$tmp_pw"
    if [ "$(id -u)" = 0 ]; then chown postgres "$tmp_pw"; fi
    as_pg "$PG_BIN/initdb" -D "$data" -U fluxi --pwfile="$tmp_pw" --auth-local=peer --auth-host=scram-sha-256 \
      --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "$tmp_pw"
  fi
  as_pg mkdir -p "$sock"
  if ! as_pg "$PG_BIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    as_pg "$PG_BIN/pg_ctl" -D "$data" -l "$dir/postgres.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $sock -c max_connections=300 -c fsync=${PG_FSYNC:-on}" start >/dev/null
  fi
  local url="postgres://fluxi:$(cat "$pwfile")@127.0.0.1:$port"
  # The application's own login role: not a superuser, owns no tenant tables, creates
  # the per-workspace roles only through the provisioning functions (create_app_db), not
  # with CREATEROLE, and as database owner creates their schemas.
  # NOINHERIT: it holds no workspace's rights until it SETs that workspace's role.
  # (ALTER: clusters made before the provisioning functions gave it CREATEROLE.)
  psql -X -q -v ON_ERROR_STOP=1 "$url/postgres" >/dev/null <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'fluxi_app') THEN
    CREATE ROLE fluxi_app LOGIN NOINHERIT NOCREATEROLE NOSUPERUSER NOBYPASSRLS PASSWORD '$(cat "$pwfile")';
  END IF;
END \$\$;
ALTER ROLE fluxi_app NOINHERIT NOCREATEROLE NOSUPERUSER NOBYPASSRLS;
SQL
  echo "$url"
}

# A fresh secret key for keyed pseudonyms (FLUXI_PSEUDONYM_KEY): 64 hex digits.
random_hex_key() { od -An -tx1 -N32 /dev/urandom | tr -d ' \n'; }

# app_url SUPERUSER_BASE_URL DB: the application role's URL for database DB.
app_url() { echo "${1/:\/\/fluxi:/://fluxi_app:}/$2"; }

# create_app_db SUPERUSER_BASE_URL DB: creates DB (if missing) owned by the application role.
# fluxi_app is NOINHERIT, so it is made owner of `public` explicitly (it would not use
# pg_database_owner's implicit rights). Installs (or updates) the workspace role
# provisioning functions every time: they are the administrator's part of the schema.
create_app_db() {
  if ! psql -X -q "$1/postgres" -tc "SELECT 1 FROM pg_database WHERE datname = '$2'" | grep -q 1; then
    psql_url "$1/postgres" "CREATE DATABASE $2 OWNER fluxi_app"
    psql_url "$1/$2" "ALTER SCHEMA public OWNER TO fluxi_app"
  fi
  psql -X -q -1 -v ON_ERROR_STOP=1 "$1/$2" -f "$ROOT/migrations/admin/provisioning.sql" >/dev/null
}

pg_stop() {
  local dir="$1"
  if [ -f "$dir/data/postmaster.pid" ]; then
    as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
}

# psql_url URL SQL: runs one statement.
psql_url() { psql -X -q -v ON_ERROR_STOP=1 "$1" -c "$2"; }

# sign_up URL DB_URL NAME EMAIL PASSWORD: signs up through the whole flow — the form, the
# link read from the outbox (benchmark servers send no mail), the password again — and
# prints the session cookie.
sign_up() {
  local url="$1" db="$2" name="$3" email="$4" password="$5" token="" deadline=$((SECONDS + 30))
  curl -fsS -o /dev/null -H 'Accept: application/json' --data-urlencode "display_name=$name" \
    --data-urlencode "email=$email" --data-urlencode "password=$password" "$url/api/signup"
  # The mail is queued just after the answer.
  until [ -n "$token" ]; do
    token="$(psql -X -qAt "$db" -c "SELECT substring(body from '/confirm-sign-up/([0-9a-f]{64})') FROM outbox_emails
      WHERE recipient = '$email' AND subject = 'Finish creating your Fluxi account' ORDER BY created_at DESC LIMIT 1")"
    if [ -z "$token" ]; then
      if [ $SECONDS -ge $deadline ]; then log "no sign-up link mailed to $email"; return 1; fi
      sleep 0.1
    fi
  done
  curl -fsS -o /dev/null -D - -H 'Accept: application/json' --data-urlencode "token=$token" \
    --data-urlencode "password=$password" "$url/api/confirm_sign_up" \
    | sed -n 's/^set-cookie: \(__Host-fluxi_session=[^;]*\).*/\1/Ip'
}

# wait_http URL [SECONDS]: waits until URL answers 200.
wait_http() {
  local url="$1" deadline=$((SECONDS + ${2:-60}))
  until curl -fsS -o /dev/null "$url" 2>/dev/null; do
    if [ $SECONDS -ge $deadline ]; then log "timed out waiting for $url"; return 1; fi
    sleep 0.2
  done
}

# leptos_env DEV|PROD: where the server finds the built site, and Leptos' mode
# (DEV for the debug build the tests use, PROD for release).
leptos_env() {
  export LEPTOS_OUTPUT_NAME=fluxi LEPTOS_SITE_ROOT="$ROOT/target/site" LEPTOS_SITE_PKG_DIR=pkg LEPTOS_ENV="$1"
}
