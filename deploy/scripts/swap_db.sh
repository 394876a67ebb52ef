#!/usr/bin/env bash
# Usage: swap_db.sh <restored_db> [live_db]
# Puts a restored database in place of the live one (default POSTGRES_DB) by renaming:
#   live_db -> <live_db>_before_restore_<UTC timestamp>,   restored_db -> live_db
# Services connect by name, so their next connection lands in the restored data. Nothing is dropped:
# the previous database stays for inspection until the operator drops it.
#
# A database cannot be renamed while anyone is connected to it. First new connections to live_db are
# refused (ALLOW_CONNECTIONS false, which holds for superusers too), then:
#   - no one else connected: the swap goes ahead;
#   - sessions connected and RESTORE_TERMINATE=1: they are ended (pg_terminate_backend). Their
#     transactions in flight roll back and the services reconnect, to the restored database;
#   - sessions connected otherwise: nothing changes (connections are allowed again) and the script
#     prints what to run, exit code 3.
# Runs as a superuser or the owner of both databases (renaming needs CREATEDB as well).
set -euo pipefail
# shellcheck source=SCRIPTDIR/_pg_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_pg_common.sh"

[[ $# -ge 1 && $# -le 2 ]] || die "usage: $(basename "$0") <restored_db> [live_db]"
pg_env
require_tools psql
restored=$1
live=${2:-$POSTGRES_DB}
[[ "$restored" != "$live" ]] || die "the restored database and the live one are both '$live'"
database_exists "$restored" || die "database '$restored' does not exist"
database_exists "$live" || die "database '$live' does not exist (nothing to swap with: rename '$restored' yourself)"
before="${live}_before_restore_$(date -u +%Y%m%d_%H%M%S)"
database_exists "$before" && die "database '$before' already exists; wait a second and run again"

# Sessions on a database other than ours, as "user (count)" for the messages.
sessions() {
  psql_query "$MAINTENANCE_DB" "SELECT coalesce(string_agg(format('%s (%s)', usename, n), ', '), '')
    FROM (SELECT coalesce(usename, '?') AS usename, count(*) AS n FROM pg_stat_activity
          WHERE datname = :'db' AND pid <> pg_backend_pid() GROUP BY 1 ORDER BY 1) s;" "db=$1"
}
allow_connections() {
  psql_query "$MAINTENANCE_DB" "ALTER DATABASE :\"db\" WITH ALLOW_CONNECTIONS $2;" "db=$1" >/dev/null
}

busy=$(sessions "$restored")
[[ -z "$busy" ]] || die "sessions are connected to the restored database '$restored' ($busy); close them first"

allow_connections "$live" false || die "cannot block new connections to '$live'"
# Whatever happens next, the live name must accept connections again.
trap 'allow_connections "$live" true || log "ERROR: run: psql -d $MAINTENANCE_DB -c '"'"'ALTER DATABASE \"$live\" WITH ALLOW_CONNECTIONS true'"'"'"' EXIT

busy=$(sessions "$live")
if [[ -n "$busy" ]]; then
  if [[ "${RESTORE_TERMINATE:-0}" != 1 ]]; then
    log "NOT SWAPPED: sessions are connected to '$live': $busy"
    log "'$restored' is restored and left as it is. Stop what uses '$live', then swap:"
    log "  docker compose stop gateway iam booking billing media notify jobs integrations"
    log "  $0 $restored $live"
    log "  (compose: docker compose run --rm backup deploy/scripts/swap_db.sh $restored $live)"
    log "or end those sessions as part of the swap (their transactions in flight roll back):"
    log "  RESTORE_TERMINATE=1 $0 $restored $live"
    log "  (compose: docker compose run --rm -e RESTORE_TERMINATE=1 backup deploy/scripts/swap_db.sh $restored $live)"
    exit 3
  fi
  log "RESTORE_TERMINATE=1: ending the sessions on '$live': $busy"
  psql_query "$MAINTENANCE_DB" "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
    WHERE datname = :'db' AND pid <> pg_backend_pid();" "db=$live" >/dev/null
  for _ in $(seq 1 50); do
    [[ -n "$(sessions "$live")" ]] || break
    sleep 0.2
  done
  busy=$(sessions "$live")
  [[ -z "$busy" ]] || die "sessions on '$live' did not end within 10 s ($busy); nothing was swapped"
fi

# Both renames in one transaction: either the restored data is live, or nothing changed.
printf '%s\n' 'BEGIN;' 'ALTER DATABASE :"live" RENAME TO :"before";' 'ALTER DATABASE :"restored" RENAME TO :"live";' 'COMMIT;' |
  psql -X -q -v ON_ERROR_STOP=1 -v "live=$live" -v "before=$before" -v "restored=$restored" -d "$MAINTENANCE_DB" -f - >/dev/null ||
  die "renaming failed; nothing was swapped"
trap - EXIT
# The previous database keeps the ALLOW_CONNECTIONS false it was given: open it for inspection.
allow_connections "$before" true || log "could not allow connections to '$before' again"
log "swapped: '$live' now holds what was restored into '$restored'"
log "the previous database is '$before'; once satisfied: psql -d $MAINTENANCE_DB -c 'DROP DATABASE \"$before\"'"
printf '%s\n' "$before"
