#!/bin/sh
# Like the official image's entrypoint, for what the manifests use: on an empty PGDATA, initdb
# with the superuser password from POSTGRES_PASSWORD (through a 0600 file, not a command line);
# local socket trusted, TCP by scram-sha-256; then postgres with the given -c arguments.
set -eu
: "${PGDATA:=/var/lib/postgresql/data}"
# A Patroni member (the chart sets PATRONI_SCOPE and mounts its configuration): Patroni initialises,
# starts, replicates and promotes PostgreSQL itself; passwords come in its PATRONI_* variables.
if [ -n "${PATRONI_SCOPE:-}" ]; then exec patroni "${PATRONI_CONFIG:-/etc/patroni/patroni.yml}"; fi
if [ $# -eq 0 ] || [ "${1#-}" != "$1" ]; then set -- postgres "$@"; fi
if [ "$1" != postgres ]; then exec "$@"; fi
shift
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  : "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD (the digdag-secrets Secret, key postgres-password)}"
  mkdir -p "$PGDATA"
  chmod 700 "$PGDATA"
  umask 077
  pwfile=$(mktemp)
  printf '%s' "$POSTGRES_PASSWORD" > "$pwfile"
  initdb -D "$PGDATA" -U postgres --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$pwfile"
  printf 'host all all all scram-sha-256\n' >> "$PGDATA/pg_hba.conf"
fi
unset POSTGRES_PASSWORD
exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
