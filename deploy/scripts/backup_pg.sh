#!/usr/bin/env bash
# Dumps POSTGRES_DB in pg_dump custom format to BACKUP_DIR/pg_<db>_<UTC timestamp>.dump, writes a
# sha256sum-compatible .sha256 beside it and prunes this database's dumps older than RETENTION_DAYS.
# Prints the dump's path on stdout (logs go to stderr), so callers can capture it. BACKUP_STAMP (set by
# backup.sh) replaces the current time in the name, so a dump and its photo archive share it.
#
# Run it as a superuser or a role with BYPASSRLS: tables with FORCE ROW LEVEL SECURITY make pg_dump
# fail for everyone else (it refuses to write a dump that RLS would silently shorten).
set -euo pipefail
# shellcheck source=SCRIPTDIR/_pg_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_pg_common.sh"

pg_env
require_tools pg_dump sha256sum find
BACKUP_DIR=${BACKUP_DIR:-./backups}
RETENTION_DAYS=${RETENTION_DAYS:-7}
[[ "$RETENTION_DAYS" =~ ^[0-9]+$ ]] || die "RETENTION_DAYS must be a whole number of days, got '$RETENTION_DAYS'"

mkdir -p "$BACKUP_DIR" || die "cannot create BACKUP_DIR '$BACKUP_DIR'"
BACKUP_DIR=$(cd "$BACKUP_DIR" && pwd)
name="pg_${POSTGRES_DB}_$(backup_stamp).dump"
dump="$BACKUP_DIR/$name"
partial="$BACKUP_DIR/.$name.partial"
[[ ! -e "$dump" ]] || die "$dump already exists; refusing to overwrite it"

trap 'rm -f "$partial"' EXIT
log "dumping database '$POSTGRES_DB' from $PGHOST:$PGPORT as $PGUSER"
# Custom format is compressed and lets pg_restore pick objects or run in parallel. No --create:
# the restore decides which database the dump lands in.
pg_dump --format=custom --no-password --file="$partial" "$POSTGRES_DB" || die "pg_dump failed"
[[ -s "$partial" ]] || die "pg_dump produced an empty file"
mv "$partial" "$dump"

# The checksum names the file relatively, so `sha256sum -c` works from BACKUP_DIR and keeps working
# after the directory is copied elsewhere.
(cd "$BACKUP_DIR" && sha256sum "$name" >"$name.sha256") || die "cannot write $dump.sha256"
log "wrote $dump ($(wc -c <"$dump") bytes) and $name.sha256"

# Only this database's dumps, and never the one just written (RETENTION_DAYS=0 keeps only it).
while IFS= read -r -d '' old; do
  rm -f "$old" "$old.sha256"
  log "pruned $(basename "$old") (older than $RETENTION_DAYS days)"
done < <(find "$BACKUP_DIR" -maxdepth 1 -type f -name "pg_${POSTGRES_DB}_????????T??????Z.dump" \
  ! -name "$name" -mmin +$((RETENTION_DAYS * 24 * 60)) -print0)

printf '%s\n' "$dump"
