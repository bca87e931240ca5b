#!/bin/sh
# As the official redis image's entrypoint: redis-server runs as the redis user in /data.
set -eu

if [ "${1:-}" = redis-server ] && [ "$(id -u)" = 0 ]; then
    chown -R redis:redis .
    exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi

if [ "${1:-}" = redis-server ]; then
    # Loopback only: the stand-ins run with host networking, and nothing else should reach them.
    # (Appended: redis-server takes the last value of an option given twice.)
    set -- "$@" --bind 127.0.0.1
fi

exec "$@"
