#!/usr/bin/env bash
# Start a throwaway PostgreSQL cluster on a loopback port and print its URL.
# PostgreSQL refuses to run as root, so as root the cluster belongs to the postgres user.
# Usage: eval "$(scripts/test-postgres.sh start DIR PORT)"; scripts/test-postgres.sh stop DIR
#        scripts/test-postgres.sh restart DIR   (fast shutdown, same options: for failure tests)
set -euo pipefail
action=${1:?start|restart|stop}; dir=${2:?directory}; port=${3:-55432}
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$bindir" ] || { echo "PostgreSQL server binaries not found (apt-get install postgresql)" >&2; exit 1; }
as_owner() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
case "$action" in
  start)
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
    if [ ! -f "$dir/PG_VERSION" ]; then
      as_owner "$bindir/initdb" -D "$dir" -U postgres -A trust --no-sync >/dev/null
    fi
    as_owner "$bindir/pg_ctl" -D "$dir" -l "$dir/server.log" -w \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c full_page_writes=off -c max_connections=200" start >/dev/null
    echo "export DIGESTD_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:$port/postgres"
    ;;
  restart)
    as_owner "$bindir/pg_ctl" -D "$dir" -l "$dir/server.log" -m fast -w restart >/dev/null
    ;;
  stop)
    as_owner "$bindir/pg_ctl" -D "$dir" -m fast stop >/dev/null || true
    ;;
esac
