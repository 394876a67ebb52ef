#!/usr/bin/env bash
# Runs once, when the postgres container initialises an empty data directory (docker-entrypoint-initdb.d).
# Passes the role passwords to cws-roles.psql as psql variables, which psql quotes itself.
set -euo pipefail
for var in POSTGRES_PASSWORD CWS_OWNER_PASSWORD CWS_APP_PASSWORD; do
  value=${!var:-}
  if [[ -z "$value" || "$value" == *change-me* ]]; then
    echo "10-cws-roles: $var is empty or still the deploy/env.example placeholder; set it in .env" >&2
    exit 1
  fi
done
psql -X -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v owner_password="$CWS_OWNER_PASSWORD" -v app_password="$CWS_APP_PASSWORD" \
  -f "$(dirname "${BASH_SOURCE[0]}")/cws-roles.psql"
