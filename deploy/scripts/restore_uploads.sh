#!/usr/bin/env bash
# Restores a photo archive written by backup_uploads.sh into ORDER_UPLOAD_ROOT:
#   restore_uploads.sh BACKUP_DIR/uploads_<timestamp>.tar.gz
# The archive's checksum must verify first. It is extracted into <root>/.restoring-<timestamp> and then
# each top-level entry (`orders/`) is swapped in by a rename, so a failed extraction leaves the current
# photos as they were. The root itself stays where it is (in compose and Kubernetes it is a volume's
# mount point, which cannot be renamed); what a swap replaced is kept in <root>/.before-restore-<timestamp>
# until the operator removes it (backups leave both folders out). Stop media before running it.
set -euo pipefail

SCRIPT_NAME=$(basename "$0" .sh)
log() { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; }
die() { printf '%s: ERROR: %s\n' "$SCRIPT_NAME" "$*" >&2; exit 1; }

archive=${1:-}
[[ -n "$archive" ]] || die "usage: $0 BACKUP_DIR/uploads_<timestamp>.tar.gz"
[[ -f "$archive" ]] || die "no archive at '$archive'"
[[ -f "$archive.sha256" ]] || die "no checksum at '$archive.sha256': refusing an unverified archive"
[[ -n "${ORDER_UPLOAD_ROOT:-}" ]] || die "ORDER_UPLOAD_ROOT is not set (where the photos go)"
(cd "$(dirname "$archive")" && sha256sum --quiet -c "$(basename "$archive").sha256") \
  || die "checksum of $archive does not verify: refusing it"
# An archive written by backup_uploads.sh holds relative paths only; refuse anything else.
if tar -tzf "$archive" | grep -qE '(^/|(^|/)\.\.(/|$))'; then
  die "$archive holds absolute or '..' paths: refusing it"
fi

root=${ORDER_UPLOAD_ROOT%/}
mkdir -p "$root" || die "cannot create ORDER_UPLOAD_ROOT '$root'"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
staging="$root/.restoring-$stamp"
previous="$root/.before-restore-$stamp"
mkdir -p "$staging"
trap 'rm -rf "$staging"' EXIT
tar --extract --gzip --file="$archive" --directory="$staging" --no-same-owner || die "extraction failed"
# Run as root (the compose `restore` container), the files would be root's and media (uid 10001)
# could not add photos beside them: give them the store's own owner.
if [[ $EUID -eq 0 ]]; then
  chown -R "$(stat -c %u:%g "$root")" "$staging" || die "cannot give the restored files the owner of $root"
fi
shopt -s nullglob
for entry in "$staging"/*; do
  name=$(basename "$entry")
  if [[ -e "$root/$name" ]]; then
    mkdir -p "$previous"
    mv "$root/$name" "$previous/$name"
  fi
  mv "$entry" "$root/$name"
done
[[ -d "$previous" ]] && log "kept what the restore replaced at $previous"
log "restored $(find "$root" -path "$root/.*" -prune -o -type f -print | wc -l) files into $root from $(basename "$archive")"
