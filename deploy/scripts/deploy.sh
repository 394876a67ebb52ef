#!/usr/bin/env bash
# Usage: deploy/scripts/deploy.sh [--force] [<revision>]
# Seed 003's one-button deploy for the compose deployment on one host, run from the checkout
# (e.g. /opt/cws) that holds .env:
#   1. print the current revision            2. git fetch + reset --hard <remote>/<branch>, print the new one
#   3. docker compose build                  4. docker compose up -d --remove-orphans
#   5. wait for Postgres (pg_isready in db)  6. migrations (docker compose run --rm migrate)
#   7. wait for /readyz, then smoke.sh (seed 004's GO/NO-GO checks)
# <revision> (a commit or tag; default <remote>/<branch>) deploys that revision instead: the code
# rollback of seed 003 is `deploy.sh <previous sha>`. Exits non-zero naming the step that failed.
# Nothing is rolled back automatically: see docs/operations.md, "Rollback".
#
# What the reset keeps: .env, ./backups (BACKUP_HOST_DIR) and every other untracked or ignored file
# (reset --hard only rewrites tracked files); the data itself lives in the compose volumes (pgdata,
# natsdata, uploads, caddy_*), which git never sees. The deploy refuses to run if the new revision
# tracks one of the kept paths (the reset would overwrite it), and, without --force, if tracked files
# have local changes (a fix edited on the server would be lost silently). --force saves those
# changes to backups/deploy-discarded-<UTC timestamp>.patch before discarding them.
#
# Settings (environment): DEPLOY_REMOTE (origin), DEPLOY_BRANCH (main), DEPLOY_KEEP (".env backups"),
# POSTGRES_WAIT_SECONDS (120), READY_WAIT_SECONDS (180), SMOKE_BASE_URL (default: from .env's
# CWS_SITE_ADDRESS: https://<domain>, or http://127.0.0.1 for ":80"), plus smoke.sh's own settings
# (ADMIN_BASIC_USERNAME/PASSWORD, SMOKE_ORG_KEY, ...).
set -euo pipefail

SCRIPT_NAME=deploy
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
current_step="start"

log() { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; }
die() { printf '%s: FAILED at %s: %s\n' "$SCRIPT_NAME" "$current_step" "$*" >&2; exit 1; }
step() { current_step="step $1/7 ($2)"; log "$current_step"; }

# The address smoke.sh checks: SMOKE_BASE_URL, else what Caddy serves per .env's CWS_SITE_ADDRESS.
base_url() {
  if [[ -n "${SMOKE_BASE_URL:-}" ]]; then printf '%s\n' "${SMOKE_BASE_URL%/}"; return; fi
  local site
  site=$(sed -n 's/^[[:space:]]*CWS_SITE_ADDRESS[[:space:]]*=[[:space:]]*//p' .env | tail -n 1 | tr -d "\"'\r")
  case "$site" in
    "" | :80) echo "http://127.0.0.1" ;;
    :*) echo "http://127.0.0.1$site" ;;
    http://* | https://*) echo "${site%/}" ;;
    *) echo "https://$site" ;;
  esac
}

revision() { git log -1 --format='%H (%h %s, %cd)' --date=short; }

main() {
  local force=0 revision=""
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --force) force=1 ;;
      -*) printf 'usage: %s [--force] [<revision>]\n' "$0" >&2; exit 2 ;;
      *) [[ -z "$revision" ]] || { printf 'usage: %s [--force] [<revision>]\n' "$0" >&2; exit 2; }; revision=$1 ;;
    esac
    shift
  done
  local remote=${DEPLOY_REMOTE:-origin} branch=${DEPLOY_BRANCH:-main}
  local pg_wait=${POSTGRES_WAIT_SECONDS:-120} ready_wait=${READY_WAIT_SECONDS:-180}
  [[ "$pg_wait" =~ ^[0-9]+$ && "$ready_wait" =~ ^[0-9]+$ ]] ||
    die "POSTGRES_WAIT_SECONDS and READY_WAIT_SECONDS must be whole seconds"
  local tool
  for tool in git docker curl jq; do  # curl and jq for smoke.sh
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found on PATH"
  done
  docker compose version >/dev/null 2>&1 || die "'docker compose' (Compose v2) is not available"

  local root
  root=$(git -C "$here" rev-parse --show-toplevel 2>/dev/null) || die "$here is not inside a git checkout"
  cd "$root"
  [[ -f docker-compose.yml ]] || die "no docker-compose.yml in $root"
  [[ -s .env ]] || die "no .env in $root: cp deploy/env.example .env and fill in the secrets (deploy/README.md)"

  step 1 "current revision"
  log "current: $(revision)"
  local before
  before=$(git rev-parse HEAD)

  local target=${revision:-$remote/$branch} path
  step 2 "update the checkout to $target"
  git fetch --quiet "$remote" "$branch" || die "git fetch $remote $branch failed"
  git rev-parse --quiet --verify "$target^{commit}" >/dev/null || die "'$target' is not a commit of this repository"
  # shellcheck disable=SC2086 # DEPLOY_KEEP is a space-separated list of paths
  for path in ${DEPLOY_KEEP:-.env backups}; do
    if [[ -n "$(git ls-tree -r --name-only "$target" -- "$path")" ]]; then
      die "$target tracks '$path': the reset would overwrite the local one. Fix the repository (untrack it) first"
    fi
  done
  local changes
  changes=$(git status --porcelain --untracked-files=no)
  if [[ -n "$changes" ]]; then
    if [[ $force -ne 1 ]]; then
      printf '%s\n' "$changes" >&2
      die "tracked files have local changes (above) that the reset would discard: commit them upstream, or rerun with --force to save them as a patch and discard them"
    fi
    mkdir -p backups
    local patch
    patch="backups/deploy-discarded-$(date -u +%Y%m%dT%H%M%SZ).patch"
    git diff HEAD >"$patch" || die "cannot save the local changes to $patch"
    log "--force: saved the local changes to $patch before discarding them"
  fi
  git reset --quiet --hard "$target" || die "git reset --hard $target failed"
  log "new:     $(revision)"
  if [[ "$(git rev-parse HEAD)" == "$before" ]]; then log "the revision did not change; building and checking anyway"; fi

  step 3 "docker compose build"
  docker compose build || die "docker compose build failed (see its output above)"

  # Compose starts db, redis and nats, runs the migrate and streams jobs to completion, and only then
  # the services (depends_on: service_completed_successfully): a failed migration fails this step.
  step 4 "docker compose up -d --remove-orphans"
  docker compose up -d --remove-orphans || die "docker compose up failed (see its output above; 'docker compose logs migrate' when the migration job failed)"

  step 5 "wait for Postgres (up to ${pg_wait}s)"
  local started=$SECONDS
  until docker compose exec -T db pg_isready -q -h 127.0.0.1 -U postgres -d cws >/dev/null 2>&1; do
    if ((SECONDS - started >= pg_wait)); then
      die "Postgres did not accept connections within ${pg_wait}s (docker compose logs db)"
    fi
    sleep 1
  done
  log "Postgres is ready"

  # A no-op at the head; run as its own step so an operator sees the migrations confirmed (or why not).
  step 6 "migrations (docker compose run --rm migrate)"
  docker compose run --rm migrate || die "the migrations failed (see the output above)"

  local base
  base=$(base_url)
  step 7 "smoke tests against $base"
  started=$SECONDS
  until [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$base/readyz" || true)" == 200 ]]; do
    if ((SECONDS - started >= ready_wait)); then
      log "$base/readyz did not answer 200 within ${ready_wait}s; running the smoke tests to show what fails"
      break
    fi
    sleep 2
  done
  "$here/smoke.sh" "$base" || die "smoke tests said NO-GO (above): the new revision is running but not healthy; see docs/operations.md, Rollback"
  log "deployed $(git rev-parse --short HEAD)"
}

# Everything runs from main: bash has read the whole script before the reset can rewrite this file.
main "$@"
exit 0
