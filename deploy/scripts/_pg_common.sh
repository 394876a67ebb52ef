# shellcheck shell=bash
# Shared by backup_pg.sh, restore_pg.sh and backup_restore_drill.sh; sourced, never run.
# Connection settings come from POSTGRES_* and are handed to libpq as PG* variables, so the password
# never appears on a command line (ps would show it).

SCRIPT_NAME=$(basename "$0" .sh)

log() { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; }
die() { printf '%s: ERROR: %s\n' "$SCRIPT_NAME" "$*" >&2; exit 1; }

require_tools() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found on PATH (install the PostgreSQL client tools)"
  done
}

# Validates POSTGRES_* and exports the libpq equivalents.
pg_env() {
  [[ -n "${POSTGRES_HOST:-}" ]] || die "POSTGRES_HOST is not set"
  [[ -n "${POSTGRES_DB:-}" ]] || die "POSTGRES_DB is not set"
  [[ -n "${POSTGRES_USER:-}" ]] || die "POSTGRES_USER is not set"
  POSTGRES_PORT=${POSTGRES_PORT:-5432}
  [[ "$POSTGRES_PORT" =~ ^[0-9]+$ ]] || die "POSTGRES_PORT must be a number, got '$POSTGRES_PORT'"
  export PGHOST="$POSTGRES_HOST" PGPORT="$POSTGRES_PORT" PGUSER="$POSTGRES_USER"
  # Without a password libpq falls back to ~/.pgpass or trust auth; never prompt (cron has no tty).
  if [[ -n "${POSTGRES_PASSWORD:-}" ]]; then export PGPASSWORD="$POSTGRES_PASSWORD"; fi
  export PGCONNECT_TIMEOUT=${PGCONNECT_TIMEOUT:-10}
  unset PGDATABASE
  MAINTENANCE_DB=${POSTGRES_MAINTENANCE_DB:-postgres}
}

# psql_query DB SQL [name=value ...]: runs SQL (with psql variables, so identifiers and literals are
# quoted by psql as :"name" / :'name') and prints unaligned tuples.
psql_query() {
  local db=$1 sql=$2; shift 2
  local vars=() kv
  for kv in "$@"; do vars+=(-v "$kv"); done
  printf '%s\n' "$sql" | psql -X -q -A -t -v ON_ERROR_STOP=1 "${vars[@]}" -d "$db" -f -
}

database_exists() {
  [[ "$(psql_query "$MAINTENANCE_DB" "SELECT count(*) FROM pg_database WHERE datname = :'db';" "db=$1")" == 1 ]]
}
