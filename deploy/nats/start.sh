#!/bin/sh
# Starts nats-server with nats.conf (the same file `make dev`, the tests, compose and Kubernetes use),
# after checking that every password it references is set: nats-server reads an empty variable as an
# empty password, that is, a user anyone may log in as. Extra arguments go to nats-server.
set -eu
conf="${NATS_CONF:-/etc/nats/nats.conf}"
for name in $(grep -o '\$NATS_[A-Z_]*_PASSWORD' "$conf" | tr -d '$' | sort -u); do
  eval "value=\${$name:-}"
  if [ "${#value}" -lt 32 ]; then
    echo "nats: $name must be set, at least 32 characters (openssl rand -hex 32)" >&2
    exit 1
  fi
done
exec nats-server -c "$conf" "$@"
