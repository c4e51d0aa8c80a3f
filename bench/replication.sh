#!/usr/bin/env bash
# Cost of the replication checks: one coordinator (on a one-member etcd, as
# in production) checking N services (default 100) every 5 s, each with a
# PostgreSQL primary and streaming standby and a Redis master and replica
# (canaries on), through two agents, one per region, each reaching N
# PostgreSQL and N Redis sources. Every service's sources point at the same
# four real servers (a PostgreSQL 15 primary with a pg_basebackup standby,
# a Redis master with a replica), so the agents do the full work per store.
# Prints the CPU each daemon used while the checks ran (share of one core)
# against the targets: coordinator < 5 %, each agent < 2 %.
#
#   bench/replication.sh [--services N] [--hold SECS] [--work DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

SERVICES=100
HOLD=60
WORK=${TMPDIR:-/tmp}/seawall-replbench
while [ $# -gt 0 ]; do
  case "$1" in
    --services) SERVICES=$2; shift 2 ;;
    --hold) HOLD=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 64 ;;
  esac
done
PGBIN=${SEAWALL_PG_BIN:-/usr/lib/postgresql/15/bin}
for t in etcd etcdctl redis-server redis-cli python3 "$PGBIN/initdb" "$PGBIN/pg_basebackup"; do
  command -v "$t" >/dev/null || { echo "$t missing: run scripts/setup.sh" >&2; exit 1; }
done
cargo build --release --quiet
S=$PWD/target/release/seawall
rm -rf "$WORK"; mkdir -p "$WORK"; W=$WORK
chmod 755 "$W"
PIDS=()
cleanup() {
  exec 2>/dev/null  # no "Killed" notices for the servers stopped here
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for d in primary standby; do
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$W/pg-$d/data" -m immediate stop >/dev/null 2>&1 || true
  done
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
as_pg() { runuser -u postgres -- "$@"; }

echo "== servers: PostgreSQL primary + standby, Redis master + replica, etcd"
PG1=$(port); PG2=$(port)
mkdir -p "$W/pg-primary" "$W/pg-standby"; chown postgres "$W/pg-primary" "$W/pg-standby"
as_pg "$PGBIN/initdb" -A trust -U postgres -D "$W/pg-primary/data" >/dev/null
cat >> "$W/pg-primary/data/postgresql.conf" <<EOF
port = $PG1
unix_socket_directories = '$W/pg-primary'
listen_addresses = ''
max_connections = $((SERVICES * 2 + 50))
EOF
as_pg "$PGBIN/pg_ctl" -D "$W/pg-primary/data" -l "$W/pg-primary/server.log" -w start >/dev/null
as_pg "$PGBIN/pg_basebackup" -D "$W/pg-standby/data" -R -X stream -d "host=$W/pg-primary port=$PG1 user=postgres"
cat >> "$W/pg-standby/data/postgresql.conf" <<EOF
port = $PG2
unix_socket_directories = '$W/pg-standby'
EOF
as_pg "$PGBIN/pg_ctl" -D "$W/pg-standby/data" -l "$W/pg-standby/server.log" -w start >/dev/null
R1=$(port); R2=$(port)
redis-server --port "$R1" --bind 127.0.0.1 --dir "$W" --save "" --appendonly no --daemonize no >"$W/redis1.log" 2>&1 &
PIDS+=($!)
redis-server --port "$R2" --bind 127.0.0.1 --dir "$W" --save "" --appendonly no --replicaof 127.0.0.1 "$R1" --daemonize no >"$W/redis2.log" 2>&1 &
PIDS+=($!)
EC=$(port); EP=$(port)
etcd --name solo --data-dir "$W/etcd" --listen-client-urls "http://127.0.0.1:$EC" \
  --advertise-client-urls "http://127.0.0.1:$EC" --listen-peer-urls "http://127.0.0.1:$EP" \
  --initial-advertise-peer-urls "http://127.0.0.1:$EP" --initial-cluster "solo=http://127.0.0.1:$EP" \
  --initial-cluster-state new >"$W/etcd.log" 2>&1 &
PIDS+=($!)
until etcdctl --endpoints "127.0.0.1:$EC" endpoint health >/dev/null 2>&1; do sleep 0.2; done
until redis-cli -p "$R2" INFO replication | grep -q 'master_link_status:up'; do sleep 0.2; done

echo "== fleet: 1 coordinator, 2 agents, $SERVICES services (4 stores each, canaries on)"
"$S" certs --dir "$W/pki" -q ca
"$S" certs --dir "$W/pki" -q operator --name ops
"$S" certs --dir "$W/pki" -q coordinator --name c1 --host 127.0.0.1
CP=$(port)
{
  cat <<EOF
id = "c1"
listen = "127.0.0.1:$CP"
[tls]
ca = "$W/pki/ca.pem"
cert = "$W/pki/c1.pem"
key = "$W/pki/c1.key"
[etcd]
endpoints = ["http://127.0.0.1:$EC"]
prefix = "/replbench"
# loopback-only etcd started by this script
allow_plaintext = true
EOF
  INTERVAL=5s python3 bench/lib/render.py bench/topology/two-regions.toml
  for i in $(seq 1 "$SERVICES"); do
    I="$i" python3 bench/lib/render.py bench/topology/service.toml
  done
} > "$W/c1.toml"
# agent NAME REGION PGDIR PGPORT REDISPORT
agent() {
  "$S" certs --dir "$W/pki" -q agent --name "$1" --region "$2"
  printf 'bench password' > "$W/$1.password"; chmod 600 "$W/$1.password"
  "$S" -q -r "$W/repo-$1" --password-file "$W/$1.password" init
  {
    cat <<EOF
id = "$1"
region = "$2"
coordinators = ["127.0.0.1:$CP"]
state_dir = "$W/state-$1"
[tls]
ca = "$W/pki/ca.pem"
cert = "$W/pki/$1.pem"
key = "$W/pki/$1.key"
[repository]
repo = "$W/repo-$1"
password_file = "$W/$1.password"
EOF
    for i in $(seq 1 "$SERVICES"); do
      printf '[[sources]]\nname = "db-%s"\nkind = "postgres"\ndsn = "host=%s port=%s user=postgres dbname=postgres"\n' "$i" "$3" "$4"
      printf '[[sources]]\nname = "cache-%s"\nkind = "redis"\nurl = "redis://127.0.0.1:%s"\n' "$i" "$5"
    done
  } > "$W/$1.toml"
  "$S" agent --config "$W/$1.toml" 2>"$W/$1.log" &
  PIDS+=($!)
}
"$S" coordinator --config "$W/c1.toml" 2>"$W/c1.log" &
COORD=$!; PIDS+=($COORD)
until (exec 3<>/dev/tcp/127.0.0.1/$CP) 2>/dev/null; do sleep 0.2; done
agent w1 west "$W/pg-primary" "$PG1" "$R1"; W1=${PIDS[-1]}
agent e1 east "$W/pg-standby" "$PG2" "$R2"; E1=${PIDS[-1]}
op() { "$S" --json "$@" --coordinator "127.0.0.1:$CP" --ca "$W/pki/ca.pem" --cert "$W/pki/ops.pem" --key "$W/pki/ops.key"; }
T0=$(date +%s)
until op replication >"$W/first.json" 2>/dev/null; do
  if [ $(( $(date +%s) - T0 )) -gt 120 ]; then
    echo "not every service is ok after 120 s:" >&2
    op replication 2>&1 | head -c 2000 >&2 || true
    exit 1
  fi
  sleep 1
done
echo "every service ok after $(( $(date +%s) - T0 )) s; settling 10 s, then measuring $HOLD s"
sleep 10

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
C0=$(ticks "$COORD"); A0=$(ticks "$W1"); B0=$(ticks "$E1"); T0=$(date +%s.%N)
sleep "$HOLD"
C1=$(ticks "$COORD"); A1=$(ticks "$W1"); B1=$(ticks "$E1"); T1=$(date +%s.%N)
op replication > "$W/last.json" || { echo "a service is not ok at the end:" >&2; head -c 2000 "$W/last.json" >&2; exit 1; }
python3 - "$W/last.json" "$HZ" "$T0" "$T1" "$C0" "$C1" "$A0" "$A1" "$B0" "$B1" <<'EOT'
import json, sys
report = json.load(open(sys.argv[1]))
hz, t0, t1 = float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
c0, c1, a0, a1, b0, b1 = map(float, sys.argv[5:11])
wall = t1 - t0
pct = lambda a, b: (b - a) / hz / wall * 100
services = report["services"]
delays = sorted(s["canary_delay_ms"] for r in services for s in r["stores"] if s.get("canary_delay_ms") is not None)
print(f"services: {len(services)}, all ok: {all(s['verdict'] == 'ok' for s in services)}, stores: {sum(len(s['stores']) for s in services)}")
print(f"canary delay (write in west to visible in east), median {delays[len(delays)//2]} ms, max {delays[-1]} ms")
print(f"coordinator CPU: {pct(c0, c1):.2f}% of one core (target < 5%)")
print(f"agent west CPU:  {pct(a0, a1):.2f}% of one core (target < 2%)")
print(f"agent east CPU:  {pct(b0, b1):.2f}% of one core (target < 2%)")
EOT
echo "work directory: $W (remove it when done)"
