#!/usr/bin/env bash
# A PostgreSQL server for a team MLflow store, from the PostgreSQL binaries on the machine
# (Debian: apt-get install postgresql), listening on 127.0.0.1 only, everything in one folder.
#
#   bash scripts/postgres.sh start DIR PORT   # initdb (first time) + pg_ctl start; prints the
#                                             #   backend URI for `mlflow server`:
#                                             #   postgresql+psycopg2://mlflow@127.0.0.1:PORT/mlflow
#   bash scripts/postgres.sh stop DIR         # pg_ctl stop (the postmaster's pid in DIR)
#
# Run as root, the server runs as the user `postgres` (PostgreSQL refuses root). Local trust
# authentication on loopback: for tests and a first try; a lab's server sets passwords.
set -euo pipefail

command=${1:?usage: postgres.sh start DIR PORT | stop DIR}
dir=${2:?usage: postgres.sh $command DIR}
bin=$(dirname "$(readlink -f "$(command -v initdb || echo /usr/lib/postgresql/15/bin/initdb)")")
[ -x "$bin/pg_ctl" ] || { echo "postgres.sh: no PostgreSQL binaries (initdb, pg_ctl)" >&2; exit 3; }
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

if [ "$command" = stop ]; then
    [ -f "$dir/data/postmaster.pid" ] || exit 0
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    exit 0
fi

[ "$command" = start ] || { echo "unknown command $command" >&2; exit 2; }
port=${3:?usage: postgres.sh start DIR PORT}
[ "$(id -u)" != 0 ] || chown postgres "$dir"
if [ ! -f "$dir/data/PG_VERSION" ]; then
    as_owner "$bin/initdb" -D "$dir/data" -U mlflow --auth=trust -E UTF8 >"$dir/initdb.log"
fi
as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir" start >/dev/null
as_owner "$bin/psql" -h 127.0.0.1 -p "$port" -U mlflow -d postgres -tAc \
    "select 1 from pg_database where datname = 'mlflow'" | grep -q 1 ||
    as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U mlflow mlflow
echo "postgresql+psycopg2://mlflow@127.0.0.1:$port/mlflow"
