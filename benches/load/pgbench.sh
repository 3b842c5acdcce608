#!/usr/bin/env bash
# pgbench through a database tunnel (`protocol = "postgres"`) against the same PostgreSQL
# directly, both over TLS: what the gateway's statement audit costs a client.
#
#   cargo build --release && benches/load/pgbench.sh [--duration 10] [--clients 4]
#
# Needs Debian's postgresql (run as its postgres account: run this as root) and util-linux's
# setpriv. Everything listens on 127.0.0.1 and lives under $WORK (/tmp/portcullis-pgbench); what
# it started is stopped on exit. Prints one table of transactions per second:
#   direct       pgbench -> PostgreSQL (TLS)
#   bytes        pgbench (TLS) -> portcullis connect --listen -> gateway (mutual TLS, bytes
#                relayed as for SSH) -> PostgreSQL: the cost of the hops alone
#   tunnel       pgbench -> portcullis connect --listen -> gateway (mutual TLS; protocol =
#                "postgres": every statement read) -> PostgreSQL (TLS)
# for the simple protocol (-M simple) and the extended one (-M prepared), select-only (-S).
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=10
CLIENTS=4
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION=$2; shift 2 ;;
        --clients) CLIENTS=$2; shift 2 ;;
        *) echo "unknown flag $1" >&2; exit 2 ;;
    esac
done
WORK=${WORK:-/tmp/portcullis-pgbench}
BIN=$PWD/target/release/portcullis
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
PG_PORT=25432 HTTPS_PORT=28443 LISTEN_PORT=25433 BYTES_PORT=25434
PIDS=()
cleanup() {
    # Last started, first stopped: the database's sessions are gone when it is asked to stop.
    # SIGTERM: a background job of a script ignores SIGINT.
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill "${PIDS[i]}" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT
rm -rf "$WORK"
mkdir -p "$WORK"
chmod 755 "$WORK"
"$BIN" dev-certs --dir "$WORK/certs" >/dev/null 2>&1

# The database: its own cluster, TLS with the dev certificate for localhost, SCRAM, hostssl only.
install -d -o postgres -g postgres "$WORK/pg"
printf 'bench-password' > "$WORK/pg/pw"
chown postgres "$WORK/pg/pw"
as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; }
as_pg "$PGBIN/initdb" -D "$WORK/pg/data" -U bench -A scram-sha-256 --pwfile "$WORK/pg/pw" \
    --no-sync -E UTF8 --locale C >/dev/null
install -o postgres -g postgres -m 600 "$WORK/certs/localhost.crt" "$WORK/pg/data/server.crt"
install -o postgres -g postgres -m 600 "$WORK/certs/localhost.key" "$WORK/pg/data/server.key"
cat >> "$WORK/pg/data/postgresql.conf" <<CONF
port = $PG_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK/pg'
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
fsync = off
CONF
echo "hostssl all all 127.0.0.1/32 scram-sha-256" > "$WORK/pg/data/pg_hba.conf"
# Not through as_pg: a function in the background is a subshell, and $! would be its pid.
setpriv --reuid=postgres --regid=postgres --init-groups -- \
    "$PGBIN/postgres" -D "$WORK/pg/data" >"$WORK/pg/log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
    "$PGBIN/pg_isready" -q -h 127.0.0.1 -p $PG_PORT && break
    sleep 0.1
done

# The gateway: one employee, one database tunnel.
CONFIG=$WORK/portcullis.toml
cat > "$CONFIG" <<TOML
environment = "bench"
[server]
allow_root = true
workers = 1
[listen]
http = "127.0.0.1:28080"
https = "127.0.0.1:$HTTPS_PORT"
[[tls.certificates]]
cert = "certs/localhost.crt"
key = "certs/localhost.key"
[networks]
bench = ["127.0.0.0/8"]
[upstreams.pg]
environment = "bench"
addrs = ["127.0.0.1:$PG_PORT"]
[[routes]]
host = "localhost"
respond = { status = 200, body = "ok" }
[log]
dir = "logs"
TOML
# The employee CA's key lives outside every directory the proxy reads, as `init` requires.
CA_KEY_DIR=$WORK-ca
rm -rf "$CA_KEY_DIR"
install -d -m 700 "$CA_KEY_DIR"
"$BIN" employees init -c "$CONFIG" --ca-key "$CA_KEY_DIR/employees.key" >/dev/null
"$BIN" employees add bench -c "$CONFIG" --ca-key "$CA_KEY_DIR/employees.key" \
    --out "$WORK/bench" >/dev/null
cat >> "$CONFIG" <<TOML
[[tunnels]]
host = "localhost"
target = "pg"
port = 5432
upstream = "pg"
allow = ["bench"]
protocol = "postgres"
tls_ca = "certs/ca.crt"
server_name = "localhost"
[[tunnels]]
host = "localhost"
target = "pg-bytes"
port = 5432
upstream = "pg"
allow = ["bench"]
TOML
"$BIN" run -c "$CONFIG" 2>"$WORK/proxy.log" &
PIDS+=($!)
"$BIN" connect --listen 127.0.0.1:$LISTEN_PORT --gateway 127.0.0.1:$HTTPS_PORT \
    --server-name localhost --cert "$WORK/bench/bench.crt" --key "$WORK/bench/bench.key" \
    --ca "$WORK/certs/ca.crt" pg:5432 2>"$WORK/connect.log" &
PIDS+=($!)
"$BIN" connect --listen 127.0.0.1:$BYTES_PORT --gateway 127.0.0.1:$HTTPS_PORT \
    --server-name localhost --cert "$WORK/bench/bench.crt" --key "$WORK/bench/bench.key" \
    --ca "$WORK/certs/ca.crt" pg-bytes:5432 2>"$WORK/connect-bytes.log" &
PIDS+=($!)
sleep 1

export PGPASSWORD=bench-password
DIRECT="host=127.0.0.1 port=$PG_PORT user=bench dbname=bench sslmode=require"
TUNNEL="host=127.0.0.1 port=$LISTEN_PORT user=bench dbname=bench sslmode=disable"
BYTES="host=127.0.0.1 port=$BYTES_PORT user=bench dbname=bench sslmode=require"
"$PGBIN/createdb" -h 127.0.0.1 -p $PG_PORT -U bench bench
"$PGBIN/pgbench" -i -s 1 -q "$DIRECT" >/dev/null 2>&1
tps() {
    "$PGBIN/pgbench" -n -S -M "$1" -c "$CLIENTS" -j 2 -T "$DURATION" "$2" 2>/dev/null \
        | awk '/^tps/ { printf "%.0f", $3 }'
}
echo "| protocol | direct tps | bytes tps | tunnel tps | tunnel / direct | tunnel / bytes |"
echo "|---|---|---|---|---|---|"
for mode in simple prepared; do
    direct=$(tps "$mode" "$DIRECT")
    bytes=$(tps "$mode" "$BYTES")
    tunnel=$(tps "$mode" "$TUNNEL")
    ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
    echo "| $mode | $direct | $bytes | $tunnel | $(ratio "$tunnel" "$direct") | $(ratio "$tunnel" "$bytes") |"
done
sessions=$(grep -c '"event":"db_session"' "$WORK"/logs/audit-*.jsonl || true)
echo
echo "db_session lines in the audit trail: $sessions"
