#!/bin/sh
# What docker-compose.yml relies on of the official postgres image's entrypoint: on the first
# start (no PG_VERSION in PGDATA), POSTGRES_USER becomes the superuser with POSTGRES_PASSWORD
# (password auth over TCP, trust on the local socket) and POSTGRES_DB is created; the server
# always runs as the postgres user.
set -eu

if [ "${1:-}" = postgres ] && [ "$(id -u)" = 0 ]; then
    install -d -o postgres -g postgres -m 0700 "$PGDATA"
    chown -R postgres:postgres "$PGDATA"
    install -d -o postgres -g postgres -m 2775 /var/run/postgresql
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ "${1:-}" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${POSTGRES_PASSWORD:?the postgres stand-in needs POSTGRES_PASSWORD}"
    user="${POSTGRES_USER:-postgres}"
    database="${POSTGRES_DB:-$user}"
    password_file="$(mktemp)"
    printf '%s\n' "$POSTGRES_PASSWORD" > "$password_file"
    initdb --pgdata="$PGDATA" --username="$user" --pwfile="$password_file" \
        --encoding=UTF8 --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256
    rm -f "$password_file"
    # Loopback only: the stand-ins run with host networking, and nothing else should reach them.
    echo "listen_addresses = '127.0.0.1'" >> "$PGDATA/postgresql.conf"
    if [ "$database" != postgres ]; then
        echo "CREATE DATABASE \"$database\"" | postgres --single -D "$PGDATA" postgres > /dev/null
    fi
fi

exec "$@"
