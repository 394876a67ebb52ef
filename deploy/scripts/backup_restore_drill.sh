#!/usr/bin/env bash
# Restore drill: backs up POSTGRES_DB (backup_pg.sh), restores the new dump into <db>_drill
# (restore_pg.sh), then checks that
#   - every service schema has a non-empty <schema>.alembic_version matching the source database,
#   - the core tables (seed 002: orgs, leads, bookings, invoices, workers; and users) exist and hold
#     as many rows as the source did when the dump was taken,
# and drops the drill database unless KEEP_DRILL_DB=1 (also when a check fails: it is a copy of
# production data and should not linger).
# Optional: DRILL_DB (default <db>_drill), DRILL_SCHEMAS (default: every non-system schema of the
# source except public), DRILL_CORE_TABLES (default: iam.orgs iam.users booking.leads booking.bookings
# booking.workers billing.invoices, each checked when its schema exists in the source; a table named
# in DRILL_CORE_TABLES is always checked), plus everything the two scripts read (BACKUP_DIR,
# RETENTION_DAYS, ...). The role needs CREATEDB and must be able to dump: run it as a superuser, whose
# counts see every org's rows.
set -euo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
# shellcheck source=SCRIPTDIR/_pg_common.sh
source "$here/_pg_common.sh"

pg_env
require_tools psql
drill_db=${DRILL_DB:-${POSTGRES_DB}_drill}
core_tables=${DRILL_CORE_TABLES:-$CORE_TABLES_DEFAULT}
[[ "$drill_db" != "$POSTGRES_DB" ]] || die "DRILL_DB must differ from POSTGRES_DB ('$POSTGRES_DB')"

if [[ -n "${DRILL_SCHEMAS:-}" ]]; then
  read -r -a schemas <<<"${DRILL_SCHEMAS//,/ }"
else
  mapfile -t schemas < <(service_schemas "$POSTGRES_DB")
fi
[[ ${#schemas[@]} -gt 0 ]] || die "database '$POSTGRES_DB' has no service schemas to verify"

cleanup() {
  local rc=$?
  if [[ "${KEEP_DRILL_DB:-0}" == 1 ]]; then
    log "KEEP_DRILL_DB=1: leaving database '$drill_db' in place"
  elif ! psql_query "$MAINTENANCE_DB" 'DROP DATABASE IF EXISTS :"db" WITH (FORCE);' "db=$drill_db" >/dev/null; then
    log "ERROR: could not drop drill database '$drill_db'; drop it by hand"
    rc=1
  else
    log "dropped drill database '$drill_db'"
  fi
  if [[ $rc -eq 0 ]]; then log "DRILL PASSED"; else log "DRILL FAILED"; fi
  exit "$rc"
}

if database_exists "$drill_db"; then
  log "dropping leftover drill database '$drill_db'"
  psql_query "$MAINTENANCE_DB" 'DROP DATABASE :"db" WITH (FORCE);' "db=$drill_db" >/dev/null
fi

# The core tables to check, and their rows in the source just before and just after the dump: the
# dump's snapshot lies between, so a restored count equal to either (or between them, on a busy
# database) is right.
declare -A rows_before=()
checked=()
for table in $core_tables; do
  if [[ -z "${DRILL_CORE_TABLES:-}" ]] && ! schema_exists "$POSTGRES_DB" "${table%%.*}"; then
    log "skipping core table $table: no schema ${table%%.*} in '$POSTGRES_DB'"
    continue
  fi
  checked+=("$table")
  if table_exists "$POSTGRES_DB" "$table"; then rows_before[$table]=$(table_count "$POSTGRES_DB" "$table"); fi
done

log "step 1/4: backup of '$POSTGRES_DB'"
dump=$("$here/backup_pg.sh" | tail -n 1) || die "backup failed"
trap cleanup EXIT

log "step 2/4: restore into '$drill_db'"
RESTORE_VERIFY=0 "$here/restore_pg.sh" "$dump" "$drill_db" || die "restore failed"

log "step 3/4: alembic versions in ${schemas[*]}"
versions_sql='SELECT coalesce(string_agg(version_num, $$,$$ ORDER BY version_num), $$$$) FROM :"schema".alembic_version;'
failed=0
for schema in "${schemas[@]}"; do
  present=$(psql_query "$drill_db" "SELECT to_regclass(format('%I.alembic_version', :'schema')) IS NOT NULL;" "schema=$schema")
  if [[ "$present" != t ]]; then
    log "FAIL: $schema.alembic_version is missing"; failed=1; continue
  fi
  restored=$(psql_query "$drill_db" "$versions_sql" "schema=$schema")
  source_version=$(psql_query "$POSTGRES_DB" "$versions_sql" "schema=$schema")
  if [[ -z "$restored" ]]; then
    log "FAIL: $schema.alembic_version is empty"; failed=1
  elif [[ "$restored" != "$source_version" ]]; then
    log "FAIL: $schema.alembic_version is '$restored' but the source has '$source_version'"; failed=1
  else
    log "ok: $schema at $restored"
  fi
done

log "step 4/4: core tables ${checked[*]:-(none)}"
for table in "${checked[@]}"; do
  if [[ -z "${rows_before[$table]:-}" ]]; then
    log "FAIL: core table $table is missing in '$POSTGRES_DB'"; failed=1; continue
  fi
  if ! table_exists "$drill_db" "$table"; then
    log "FAIL: core table $table is missing"; failed=1; continue
  fi
  restored=$(table_count "$drill_db" "$table")
  before=${rows_before[$table]}
  after=$(table_count "$POSTGRES_DB" "$table")
  low=$((before < after ? before : after)) high=$((before > after ? before : after))
  if ((restored >= low && restored <= high)); then
    log "ok: $table ($restored rows; the source had $before before the dump, $after now)"
  else
    log "FAIL: $table has $restored rows but the source had $before before the dump and has $after now"; failed=1
  fi
done

[[ $failed -eq 0 ]] || die "verification failed for $dump"
log "verified $dump"
