#!/bin/sh
# Starts nats-server with nats.conf (the same file `make dev`, the tests, compose and Kubernetes use),
# after checking that every password it references is set: nats-server reads an empty variable as an
# empty password, that is, a user anyone may log in as. Extra arguments go to nats-server.
set -eu
conf="${NATS_CONF:-/etc/nats/nats.conf}"
# The pattern is nats.conf's literal `$NATS_..._PASSWORD` references, not an expansion here.
# shellcheck disable=SC2016
names=$(grep -o '\$NATS_[A-Z_]*_PASSWORD' "$conf" | tr -d '$' | sort -u)
for name in $names; do
  value=""
  eval "value=\${$name:-}"  # a name grep matched as NATS_[A-Z_]*: nothing else reaches eval
  if [ "${#value}" -lt 32 ]; then
    echo "nats: $name must be set, at least 32 characters (openssl rand -hex 32)" >&2
    exit 1
  fi
done
exec nats-server -c "$conf" "$@"
