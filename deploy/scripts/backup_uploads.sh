#!/usr/bin/env bash
# Archives the local photo store (ORDER_UPLOAD_ROOT, media's `local` backend) to
# BACKUP_DIR/uploads_<UTC timestamp>.tar.gz with a sha256sum-compatible .sha256 beside it, and prunes
# archives older than RETENTION_DAYS. Prints the archive's path on stdout (logs go to stderr).
#
# Seed 002: "If using ORDER_STORAGE_BACKEND=local, ensure the ORDER_UPLOAD_ROOT directory is included in
# filesystem backups". backup.sh runs it right after backup_pg.sh with the same BACKUP_STAMP, so the
# dump pg_<db>_<stamp>.dump and uploads_<stamp>.tar.gz are one backup set (restore.sh restores both).
# In-flight uploads (`.incoming/`) and partial writes (`.upload-*.part`) are left out: they belong to
# no photo row yet. With R2 or Cloudflare Images there is nothing to archive: the object store keeps them.
set -euo pipefail

SCRIPT_NAME=$(basename "$0" .sh)
log() { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; }
die() { printf '%s: ERROR: %s\n' "$SCRIPT_NAME" "$*" >&2; exit 1; }
for tool in tar gzip sha256sum find; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found on PATH"
done

[[ -n "${ORDER_UPLOAD_ROOT:-}" ]] || die "ORDER_UPLOAD_ROOT is not set (the local photo store to archive)"
[[ -d "$ORDER_UPLOAD_ROOT" ]] || die "ORDER_UPLOAD_ROOT '$ORDER_UPLOAD_ROOT' is not a directory"
BACKUP_DIR=${BACKUP_DIR:-./backups}
RETENTION_DAYS=${RETENTION_DAYS:-7}
[[ "$RETENTION_DAYS" =~ ^[0-9]+$ ]] || die "RETENTION_DAYS must be a whole number of days, got '$RETENTION_DAYS'"

mkdir -p "$BACKUP_DIR" || die "cannot create BACKUP_DIR '$BACKUP_DIR'"
BACKUP_DIR=$(cd "$BACKUP_DIR" && pwd)
root=$(cd "$ORDER_UPLOAD_ROOT" && pwd)
stamp=${BACKUP_STAMP:-$(date -u +%Y%m%dT%H%M%SZ)}
[[ "$stamp" =~ ^[0-9]{8}T[0-9]{6}Z$ ]] || die "BACKUP_STAMP must look like 20260106T020000Z, got '$stamp'"
name="uploads_$stamp.tar.gz"
archive="$BACKUP_DIR/$name"
partial="$BACKUP_DIR/.$name.partial"
[[ ! -e "$archive" ]] || die "$archive already exists; refusing to overwrite it"
case "$BACKUP_DIR/" in "$root"/*) die "BACKUP_DIR must not be inside ORDER_UPLOAD_ROOT" ;; esac

trap 'rm -f "$partial"' EXIT
log "archiving $root"
# Paths are stored relative to the root (orders/<org>/<booking>/<photo>.<ext>), so a restore can put
# them under any root. --warning=no-file-changed: a photo written meanwhile is in the next backup.
tar --create --gzip --file="$partial" --directory="$root" \
  --exclude='./.incoming' --exclude='./.restoring-*' --exclude='./.before-restore-*' --exclude='*.part' \
  --warning=no-file-changed . \
  || [[ $? -eq 1 ]] || die "tar failed"
[[ -s "$partial" ]] || die "tar produced an empty file"
mv "$partial" "$archive"
(cd "$BACKUP_DIR" && sha256sum "$name" >"$name.sha256") || die "cannot write $archive.sha256"
log "wrote $archive ($(wc -c <"$archive") bytes, $(tar -tzf "$archive" | grep -vc '/$') files) and $name.sha256"

while IFS= read -r -d '' old; do
  rm -f "$old" "$old.sha256"
  log "pruned $(basename "$old") (older than $RETENTION_DAYS days)"
done < <(find "$BACKUP_DIR" -maxdepth 1 -type f -name 'uploads_????????T??????Z.tar.gz' \
  ! -name "$name" -mmin +$((RETENTION_DAYS * 24 * 60)) -print0)

printf '%s\n' "$archive"
