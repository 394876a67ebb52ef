#!/usr/bin/env bash
# Usage: restore.sh <latest|BACKUP_DIR/pg_<db>_<stamp>.dump>
# Restores one backup set written by backup.sh: the database (restore_pg.sh: into a fresh database,
# verified, swapped in for POSTGRES_DB) and then, with media's local storage, the photos of the same
# stamp (restore_uploads.sh into ORDER_UPLOAD_ROOT). Seed 004 "Rollback": restore the most recent backup.
#
# Stop the services first (the swap needs the live database free, and media must not write photos
# meanwhile), then start them again: `docker compose up -d` runs the migrate job before them.
# Exit codes: 0 restored; 3 the database was restored beside the live one but not swapped (sessions
# still connected: the printed commands finish it; the photos were not touched); 1 anything else.
#
# Without ORDER_UPLOAD_ROOT the restore refuses to run unless ORDER_STORAGE_BACKEND is r2 or
# cloudflare_images (an object store keeps the photos). Everything else is restore_pg.sh's.
set -euo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
# shellcheck source=SCRIPTDIR/_pg_common.sh
source "$here/_pg_common.sh"

[[ $# -eq 1 ]] || die "usage: $(basename "$0") <latest|BACKUP_DIR/pg_<db>_<stamp>.dump>"
pg_env
dump=$1
if [[ "$dump" == latest ]]; then
  dump=$(latest_dump "${BACKUP_DIR:-./backups}" "$POSTGRES_DB")
fi
[[ -f "$dump" ]] || die "dump file '$dump' not found"
name=$(basename "$dump")
[[ "$name" =~ _([0-9]{8}T[0-9]{6}Z)\.dump$ ]] || die "'$name' is not named pg_<db>_<stamp>.dump (backup_pg.sh/backup.sh), so its photo archive cannot be found"
stamp=${BASH_REMATCH[1]}
archive="$(dirname "$dump")/uploads_$stamp.tar.gz"

backend=${ORDER_STORAGE_BACKEND:-local}
if [[ -n "${ORDER_UPLOAD_ROOT:-}" ]]; then
  [[ -f "$archive" ]] || die "no photo archive $archive beside $name: this backup set has no photos. Restore the database alone with restore_pg.sh if that is what you want"
  [[ -f "$archive.sha256" ]] || die "no checksum at '$archive.sha256': refusing an unverified archive"
elif [[ "$backend" == local ]]; then
  die "ORDER_UPLOAD_ROOT is not set: with ORDER_STORAGE_BACKEND=local (the default) the photos are restored with the database. Set it to the photo store (compose: the restore service sets it), or set ORDER_STORAGE_BACKEND=r2|cloudflare_images"
fi

log "backup set $stamp: $name${ORDER_UPLOAD_ROOT:+ and $(basename "$archive")}"
rc=0
"$here/restore_pg.sh" "$dump" || rc=$?
if [[ $rc -eq 3 ]]; then
  if [[ -n "${ORDER_UPLOAD_ROOT:-}" ]]; then
    log "the photos were not restored, as the database was not swapped; once it is, run:"
    log "  ORDER_UPLOAD_ROOT=$ORDER_UPLOAD_ROOT $here/restore_uploads.sh $archive"
  fi
  exit 3
fi
[[ $rc -eq 0 ]] || die "the database restore failed (above)${ORDER_UPLOAD_ROOT:+; the photos were not touched}"
if [[ -n "${ORDER_UPLOAD_ROOT:-}" ]]; then
  "$here/restore_uploads.sh" "$archive" ||
    die "the database is restored but the photos are not (above): fix the cause, then run $here/restore_uploads.sh $archive"
fi
log "restored backup set $stamp; start the services (docker compose up -d) and run smoke.sh"
