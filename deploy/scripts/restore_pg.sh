#!/usr/bin/env bash
# Usage: restore_pg.sh <dump_file> [target_db]
# Verifies <dump_file>.sha256, then restores into target_db (default POSTGRES_DB), creating it when it
# does not exist. Custom-format dumps (backup_pg.sh) go through pg_restore; plain SQL dumps through psql.
#
# A dump made with `pg_dump --create` (plain SQL) carries its own CREATE DATABASE and \connect, so it
# would land in the database named inside it rather than in target_db: refused unless
# ALLOW_CREATE_IN_DUMP=1, and then run from the maintenance database. Custom-format archives never
# trigger this: pg_restore only emits CREATE DATABASE when given --create, which this script never does.
#
# Restore as the role that should own the objects (cws_owner in production): --no-owner makes the
# restoring role their owner. A target that already has tables is refused: restore into a fresh
# database and swap, or drop the target first.
set -euo pipefail
# shellcheck source=SCRIPTDIR/_pg_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_pg_common.sh"

[[ $# -ge 1 && $# -le 2 ]] || die "usage: $(basename "$0") <dump_file> [target_db]"
dump=$1
pg_env
target=${2:-$POSTGRES_DB}
require_tools pg_restore psql sha256sum

[[ -f "$dump" ]] || die "dump file '$dump' not found"
sumfile="$dump.sha256"
[[ -f "$sumfile" ]] || die "checksum file '$sumfile' not found; refusing to restore an unverified dump"

# Compare the hash itself rather than `sha256sum -c`, which would check whatever file name is written
# inside the .sha256 (wrong after a rename, or pointing at another file).
expected=$(awk 'NR == 1 { print $1 }' "$sumfile")
[[ "$expected" =~ ^[0-9a-f]{64}$ ]] || die "'$sumfile' does not hold a sha256 checksum"
actual=$(sha256sum <"$dump" | awk '{ print $1 }')
[[ "$actual" == "$expected" ]] || die "checksum mismatch for '$dump' (expected $expected, got $actual); refusing to restore"
log "checksum verified for $(basename "$dump")"

if [[ "$(head -c 5 "$dump")" == "PGDMP" ]]; then format=custom; else format=sql; fi

creates_db=0
if [[ "$format" == sql ]] && grep -Eiq '^[[:space:]]*CREATE[[:space:]]+DATABASE[[:space:]]' "$dump"; then
  creates_db=1
  [[ "${ALLOW_CREATE_IN_DUMP:-0}" == 1 ]] ||
    die "'$dump' contains CREATE DATABASE (made with pg_dump --create); it would restore into the database named inside it, not '$target'. Set ALLOW_CREATE_IN_DUMP=1 to run it as is."
fi

if [[ "$creates_db" == 1 ]]; then
  log "ALLOW_CREATE_IN_DUMP=1: running the dump from '$MAINTENANCE_DB'; it creates and fills the database it names (target '$target' is ignored)"
  # No --single-transaction: CREATE DATABASE cannot run inside one. ON_ERROR_STOP still stops at the
  # first error (e.g. when that database already exists).
  psql -X -q -v ON_ERROR_STOP=1 -d "$MAINTENANCE_DB" -f "$dump" >/dev/null || die "restore of '$dump' failed"
  log "restore finished"
  exit 0
fi

if database_exists "$target"; then
  tables=$(psql_query "$target" "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p') AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\_%';")
  [[ "$tables" == 0 ]] || die "target database '$target' already has $tables table(s); restore into a new database or drop it first"
  log "restoring into existing empty database '$target'"
else
  psql_query "$MAINTENANCE_DB" 'CREATE DATABASE :"db";' "db=$target" >/dev/null || die "cannot create database '$target'"
  log "created database '$target'"
fi

log "restoring $(basename "$dump") ($format) into '$target' on $PGHOST:$PGPORT as $PGUSER"
if [[ "$format" == custom ]]; then
  # One transaction: a failed restore leaves the target as empty as it was.
  pg_restore --no-owner --exit-on-error --single-transaction --no-password -d "$target" "$dump" ||
    die "pg_restore into '$target' failed"
else
  psql -X -q -v ON_ERROR_STOP=1 --single-transaction -d "$target" -f "$dump" >/dev/null ||
    die "psql restore into '$target' failed"
fi
log "restore into '$target' finished"
