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

# The core tables of seed 002 (orgs, leads, bookings, invoices, workers) plus the users, by schema.
# The drill and the restore check each one whose schema exists in the database they look at.
# shellcheck disable=SC2034 # read by the scripts that source this file
CORE_TABLES_DEFAULT="iam.orgs iam.users booking.leads booking.bookings booking.workers billing.invoices"

# The service schemas of a database: every non-system schema except public.
service_schemas() {
  psql_query "$1" "SELECT nspname FROM pg_namespace
    WHERE nspname NOT IN ('public', 'information_schema') AND nspname NOT LIKE 'pg\_%' ORDER BY 1;"
}

schema_exists() {
  [[ "$(psql_query "$1" "SELECT count(*) FROM pg_namespace WHERE nspname = :'s';" "s=$2")" == 1 ]]
}

table_exists() {
  [[ "$(psql_query "$1" "SELECT to_regclass(:'t') IS NOT NULL;" "t=$2")" == t ]]
}

# Rows of schema.table as the connected role sees them (all of them for a superuser: row-level
# security binds every other role, the tables' owner included, since the policies are FORCEd).
table_count() {
  local schema=${2%%.*} table=${2#*.}
  psql_query "$1" 'SELECT count(*) FROM :"s".:"t";' "s=$schema" "t=$table"
}

# A schema's Alembic versions, comma-separated ("" when the table is empty, "-" when it is missing).
alembic_versions() {
  if ! table_exists "$1" "$2.alembic_version"; then echo -; return; fi
  psql_query "$1" 'SELECT coalesce(string_agg(version_num, $$,$$ ORDER BY version_num), $$$$) FROM :"s".alembic_version;' "s=$2"
}

# The newest pg_<db>_<timestamp>.dump in a directory (the timestamps sort as text).
latest_dump() {
  local dir=$1 db=$2 newest
  newest=$(find "$dir" -maxdepth 1 -type f -name "pg_${db}_????????T??????Z.dump" -printf '%f\n' 2>/dev/null | sort | tail -n 1)
  [[ -n "$newest" ]] || die "no pg_${db}_<timestamp>.dump in '$dir' (BACKUP_DIR)"
  printf '%s/%s\n' "$dir" "$newest"
}

# BACKUP_STAMP (set by backup.sh so the dump and the photo archive share it) or now, in UTC.
backup_stamp() {
  local stamp=${BACKUP_STAMP:-$(date -u +%Y%m%dT%H%M%SZ)}
  [[ "$stamp" =~ ^[0-9]{8}T[0-9]{6}Z$ ]] || die "BACKUP_STAMP must look like 20260106T020000Z, got '$stamp'"
  printf '%s\n' "$stamp"
}
