#!/usr/bin/env bash
# Usage: restore_pg.sh <dump_file|latest> [target_db]
# Verifies <dump_file>.sha256, then restores it. `latest` is the newest BACKUP_DIR/pg_<POSTGRES_DB>_*.dump.
# Custom-format dumps (backup_pg.sh) go through pg_restore; plain SQL dumps through psql.
#
# target_db (default POSTGRES_DB):
#   - missing or without tables: the dump is restored into it (created when missing).
#   - holding tables, i.e. the live database (seed 004 "Rollback": restore the most recent backup):
#     the dump is restored into a fresh <target>_restore_<UTC timestamp> (same owner, database
#     privileges and settings as the target), which is verified (every service schema's Alembic
#     version, compared with the code's heads when known, and the core tables with their row counts)
#     and then swapped in by swap_db.sh: the target becomes <target>_before_restore_<timestamp>, kept.
#     The swap needs the target free of sessions: stop the services first, or set RESTORE_TERMINATE=1
#     to end their sessions. Otherwise the restored copy is left as it is, the commands to finish are
#     printed and the exit code is 3. RESTORE_SWAP=0 stops after the verification (exit 0), printing them.
#
# A dump made with `pg_dump --create` (plain SQL) carries its own CREATE DATABASE and \connect, so it
# would land in the database named inside it rather than in target_db: refused unless
# ALLOW_CREATE_IN_DUMP=1, and then run from the maintenance database as it is (no swap: it needs that
# database absent). Custom-format archives never trigger this: pg_restore only emits CREATE DATABASE
# when given --create, which this script never does.
#
# Run it as a superuser (compose's `backup` service is one): the tables FORCE row-level security, and
# loading them as any other role fails. A superuser keeps the owners recorded in the dump (cws_owner
# keeps owning the schemas, as the migrations and the owner-only policies need); RESTORE_NO_OWNER=1,
# or a non-superuser, makes the restoring role the owner instead (--no-owner).
# ALEMBIC_HEADS ("iam=<rev> booking=<rev> ...", from alembic_heads.py) lets the verification compare
# each schema with the code's head; without it, a python3 with alembic next to the checkout is asked.
set -euo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
# shellcheck source=SCRIPTDIR/_pg_common.sh
source "$here/_pg_common.sh"

[[ $# -ge 1 && $# -le 2 ]] || die "usage: $(basename "$0") <dump_file|latest> [target_db]"
pg_env
target=${2:-$POSTGRES_DB}
require_tools pg_restore psql sha256sum
dump=$1
if [[ "$dump" == latest ]]; then
  dump=$(latest_dump "${BACKUP_DIR:-./backups}" "$POSTGRES_DB")
  log "latest backup: $dump"
fi

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

if [[ "$format" == sql ]] && grep -Eiq '^[[:space:]]*CREATE[[:space:]]+DATABASE[[:space:]]' "$dump"; then
  [[ "${ALLOW_CREATE_IN_DUMP:-0}" == 1 ]] ||
    die "'$dump' contains CREATE DATABASE (made with pg_dump --create); it would restore into the database named inside it, not '$target'. Set ALLOW_CREATE_IN_DUMP=1 to run it as is."
  log "ALLOW_CREATE_IN_DUMP=1: running the dump from '$MAINTENANCE_DB'; it creates and fills the database it names (target '$target' is ignored)"
  # No --single-transaction: CREATE DATABASE cannot run inside one. ON_ERROR_STOP still stops at the
  # first error (e.g. when that database already exists).
  psql -X -q -v ON_ERROR_STOP=1 -d "$MAINTENANCE_DB" -f "$dump" >/dev/null || die "restore of '$dump' failed"
  log "restore finished"
  exit 0
fi

owner_flags=(--no-owner)
if [[ "${RESTORE_NO_OWNER:-0}" != 1 && "$(psql_query "$MAINTENANCE_DB" 'SELECT rolsuper FROM pg_roles WHERE rolname = current_user;')" == t ]]; then
  owner_flags=()
fi

# The code's Alembic heads as "schema=rev ..." (empty when unknown).
code_heads() {
  if [[ -n "${ALEMBIC_HEADS:-}" ]]; then printf '%s\n' "$ALEMBIC_HEADS"; return; fi
  local python=${CWS_PYTHON:-python3}
  if command -v "$python" >/dev/null 2>&1; then "$python" "$here/alembic_heads.py" 2>/dev/null || true; fi
}

# verify DB: every service schema has an Alembic version (compared with the code's heads when known)
# and the core tables present in it have rows to count. Prints what it found; fails on a missing
# version or core table.
verify() {
  local db=$1 heads schema version head failed=0 table
  local -a schemas
  mapfile -t schemas < <(service_schemas "$db")
  [[ ${#schemas[@]} -gt 0 ]] || { log "FAIL: '$db' has no service schemas"; return 1; }
  heads=" $(code_heads) "
  [[ "$heads" != "  " ]] || log "the code's Alembic heads are unknown (set ALEMBIC_HEADS, see alembic_heads.py); after the swap, /readyz's migrations_current tells"
  for schema in "${schemas[@]}"; do
    version=$(alembic_versions "$db" "$schema")
    if [[ "$version" == - || -z "$version" ]]; then
      log "FAIL: $schema has no Alembic version"; failed=1; continue
    fi
    head=$(sed -n "s/.* $schema=\([^ ]*\) .*/\1/p" <<<"$heads")
    if [[ -z "$head" ]]; then
      log "ok: $schema at $version"
    elif [[ "$head" == "$version" ]]; then
      log "ok: $schema at $version (the code's head)"
    else
      log "NOTE: $schema at $version, the code's head is $head: 'docker compose run --rm migrate' (make migrate) brings an older backup forward; a backup newer than the code needs the code it was taken with"
    fi
  done
  for table in $CORE_TABLES_DEFAULT; do
    schema_exists "$db" "${table%%.*}" || continue
    if table_exists "$db" "$table"; then
      log "ok: $table ($(table_count "$db" "$table") rows)"
    else
      log "FAIL: core table $table is missing"; failed=1
    fi
  done
  return "$failed"
}

# restore_into DB: loads the dump into an existing empty database.
restore_into() {
  log "restoring $(basename "$dump") ($format) into '$1' on $PGHOST:$PGPORT as $PGUSER"
  if [[ "$format" == custom ]]; then
    # One transaction: a failed restore leaves the database as empty as it was.
    pg_restore "${owner_flags[@]}" --exit-on-error --single-transaction --no-password -d "$1" "$dump" ||
      die "pg_restore into '$1' failed"
  else
    psql -X -q -v ON_ERROR_STOP=1 --single-transaction -d "$1" -f "$dump" >/dev/null ||
      die "psql restore into '$1' failed"
  fi
  log "restore into '$1' finished"
}

tables=0
if database_exists "$target"; then
  tables=$(psql_query "$target" "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p') AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\_%';")
fi

if [[ "$tables" == 0 ]]; then
  if database_exists "$target"; then
    log "restoring into existing empty database '$target'"
  else
    psql_query "$MAINTENANCE_DB" 'CREATE DATABASE :"db";' "db=$target" >/dev/null || die "cannot create database '$target'"
    log "created database '$target'"
  fi
  restore_into "$target"
  # The drill compares with its source itself (RESTORE_VERIFY=0).
  if [[ "${RESTORE_VERIFY:-1}" != 0 ]]; then verify "$target" || die "'$target' is restored but does not verify (above)"; fi
  exit 0
fi

# The live database: restore beside it, verify, swap.
fresh="${target}_restore_$(date -u +%Y%m%d_%H%M%S)"
database_exists "$fresh" && die "database '$fresh' already exists; wait a second and run again"
log "'$target' has $tables tables: restoring into the fresh database '$fresh', then swapping it in"
# Until the restore has finished, a failure drops the half-made copy (the live database is untouched).
trap 'log "dropping the unfinished '"'"'$fresh'"'"'"; psql_query "$MAINTENANCE_DB" "DROP DATABASE IF EXISTS :\"db\";" "db=$fresh" >/dev/null || true' EXIT
# Same owner, database privileges (initdb revokes PUBLIC's and grants CONNECT to the runtime role)
# and settings as the live one: a dump without --create carries none of them.
psql_query "$MAINTENANCE_DB" "SELECT format('CREATE DATABASE %I OWNER %I TEMPLATE template0;', :'new', pg_get_userbyid(datdba))
    FROM pg_database WHERE datname = :'live';
  SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC;', :'new') FROM pg_database WHERE datname = :'live' AND datacl IS NOT NULL;
  SELECT format('GRANT %s ON DATABASE %I TO %s;', a.privilege_type, :'new',
                CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END)
    FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = :'live';
  SELECT format('ALTER DATABASE %I SET %s TO %L;', :'new', split_part(c, '=', 1), substr(c, strpos(c, '=') + 1))
    FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase, unnest(s.setconfig) c
    WHERE d.datname = :'live' AND s.setrole = 0;" "new=$fresh" "live=$target" |
  psql -X -q -v ON_ERROR_STOP=1 -d "$MAINTENANCE_DB" -f - >/dev/null ||
  die "cannot create '$fresh' like '$target'"
log "created '$fresh' (owner and privileges of '$target')"
restore_into "$fresh"
trap - EXIT
if ! verify "$fresh"; then
  die "'$fresh' does not verify (above); '$target' is untouched. Inspect '$fresh', then drop it: psql -d $MAINTENANCE_DB -c 'DROP DATABASE \"$fresh\"'"
fi

swap=("$here/swap_db.sh" "$fresh" "$target")
if [[ "${RESTORE_SWAP:-1}" == 0 ]]; then
  log "RESTORE_SWAP=0: '$fresh' is restored and verified; '$target' is untouched. To swap it in (services stopped):"
  log "  ${swap[*]}"
  exit 0
fi
"${swap[@]}" >/dev/null
