#!/usr/bin/env bash
# One backup set: the database (backup_pg.sh) and, with media's local storage, the photos
# (backup_uploads.sh), both named with the same UTC timestamp:
#   BACKUP_DIR/pg_<db>_<stamp>.dump (+ .sha256) and BACKUP_DIR/uploads_<stamp>.tar.gz (+ .sha256)
# restore.sh restores such a set. Prints the paths written on stdout, one a line (logs go to stderr).
#
# Photos: ORDER_UPLOAD_ROOT is the local photo store to archive. Without it the backup refuses to
# run unless ORDER_STORAGE_BACKEND says the photos live in an object store (r2, cloudflare_images),
# because a set without its photos would restore rows pointing at files that are gone.
# Everything else is backup_pg.sh's (POSTGRES_*, BACKUP_DIR, RETENTION_DAYS).
#
# Compose (the db `backup` service, with the uploads volume mounted read-only beside it):
#   docker compose run --rm backup      (its service mounts the uploads volume read-only at /uploads)
set -euo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
# shellcheck source=SCRIPTDIR/_pg_common.sh
source "$here/_pg_common.sh"

backend=${ORDER_STORAGE_BACKEND:-local}
if [[ -z "${ORDER_UPLOAD_ROOT:-}" ]]; then
  [[ "$backend" != local ]] ||
    die "ORDER_UPLOAD_ROOT is not set: with ORDER_STORAGE_BACKEND=local (the default) the photos are part of the backup. Set it to the photo store (compose: the backup service sets it), or set ORDER_STORAGE_BACKEND=r2|cloudflare_images when an object store keeps them"
  log "ORDER_STORAGE_BACKEND=$backend: the photos live in the object store; backing up the database only"
fi

BACKUP_STAMP=$(backup_stamp)
export BACKUP_STAMP
dump=$("$here/backup_pg.sh" | tail -n 1) || die "the database backup failed; no backup set was written"
printf '%s\n' "$dump"
if [[ -n "${ORDER_UPLOAD_ROOT:-}" ]]; then
  archive=$("$here/backup_uploads.sh" | tail -n 1) ||
    die "the photo archive failed: $dump has no photos beside it; fix the cause and run the backup again"
  printf '%s\n' "$archive"
fi
log "backup set $BACKUP_STAMP written to $(dirname "$dump")"
