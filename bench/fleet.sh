#!/usr/bin/env bash
# Coordinator load benchmark: one coordinator (on a one-member etcd, as in
# production) and 1,000 simulated agents, each with its own certificate and
# mutual-TLS stream, heartbeating every 5 s from another process on
# loopback. Prints the coordinator's CPU (share of one core) and peak RSS
# while they heartbeat, and the time to dispatch one job to every agent.
# Then the takeover figure: three replicas on a three-member etcd with a
# 10 s lease, the leader killed with -9, time until another leads.
#
#   bench/fleet.sh [--agents N] [--hold SECS] [--work DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

AGENTS=1000
HOLD=60
WORK=${TMPDIR:-/tmp}/seawall-fleetbench
while [ $# -gt 0 ]; do
  case "$1" in
    --agents) AGENTS=$2; shift 2 ;;
    --hold) HOLD=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 64 ;;
  esac
done
for t in etcd etcdctl python3; do
  command -v "$t" >/dev/null || { echo "$t missing: run scripts/setup.sh" >&2; exit 1; }
done
cargo build --release --quiet
S=$PWD/target/release/seawall
rm -rf "$WORK"; mkdir -p "$WORK"; W=$WORK
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill -9 "$p" 2>/dev/null || true; done; true; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ulimit -n 65536 2>/dev/null || true

"$S" certs --dir "$W/pki" -q ca
"$S" certs --dir "$W/pki" -q operator --name ops

# etcd members: start_etcd NAME CLIENT PEER CLUSTER
start_etcd() {
  etcd --name "$1" --data-dir "$W/etcd-$1" --listen-client-urls "http://127.0.0.1:$2" \
    --advertise-client-urls "http://127.0.0.1:$2" --listen-peer-urls "http://127.0.0.1:$3" \
    --initial-advertise-peer-urls "http://127.0.0.1:$3" --initial-cluster "$4" \
    --initial-cluster-state new >"$W/etcd-$1.log" 2>&1 &
  PIDS+=($!)
}
# coordinator_conf ID PORT ENDPOINTS TTL
coordinator_conf() {
  "$S" certs --dir "$W/pki" -q coordinator --name "$1" --host 127.0.0.1
  cat > "$W/$1.toml" <<EOT
id = "$1"
listen = "127.0.0.1:$2"
heartbeat = "5s"
[tls]
ca = "$W/pki/ca.pem"
cert = "$W/pki/$1.pem"
key = "$W/pki/$1.key"
[etcd]
endpoints = [$3]
prefix = "/bench-$1"
lease_ttl = "$4"
# loopback-only etcd started by this script
allow_plaintext = true
EOT
}

echo "== load: 1 coordinator, $AGENTS simulated agents heartbeating every 5 s"
EC=$(port); EP=$(port)
start_etcd solo "$EC" "$EP" "solo=http://127.0.0.1:$EP"
until etcdctl --endpoints "127.0.0.1:$EC" endpoint health >/dev/null 2>&1; do sleep 0.2; done
CP=$(port)
coordinator_conf load "$CP" "\"http://127.0.0.1:$EC\"" 10s
"$S" coordinator --config "$W/load.toml" 2>"$W/load.log" &
COORD=$!; PIDS+=($COORD)
until (exec 3<>/dev/tcp/127.0.0.1/$CP) 2>/dev/null; do sleep 0.2; done
"$S" bench-agents --coordinator "127.0.0.1:$CP" --coordinator-pid "$COORD" --pki "$W/pki" \
  --count "$AGENTS" --hold-secs "$HOLD" > "$W/load.json"
python3 - "$W/load.json" <<'EOT'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"agents connected: {r['agents']} in {r['connect_secs']:.1f} s")
print(f"coordinator CPU while they heartbeat ({r['hold_secs']} s): {r['coordinator_cpu_percent_of_one_core']:.1f}% of one core (target < 10%)")
print(f"coordinator peak RSS: {r['coordinator_peak_rss_mib']:.0f} MiB (target < 200 MiB)")
print(f"one job to every agent: {r['assigned']} assigned in {r['dispatch_to_all_secs']:.2f} s (target < 2 s; triggers took {r['triggered_secs']:.2f} s, {r['triggers_refused']} refused)")
EOT
kill "$COORD" 2>/dev/null || true

echo "== takeover: 3 replicas on a 3-member etcd, lease TTL 10 s, leader killed with -9"
C1=$(port); P1=$(port); C2=$(port); P2=$(port); C3=$(port); P3=$(port)
CLUSTER="m1=http://127.0.0.1:$P1,m2=http://127.0.0.1:$P2,m3=http://127.0.0.1:$P3"
start_etcd m1 "$C1" "$P1" "$CLUSTER"; start_etcd m2 "$C2" "$P2" "$CLUSTER"; start_etcd m3 "$C3" "$P3" "$CLUSTER"
until etcdctl --endpoints "127.0.0.1:$C1,127.0.0.1:$C2,127.0.0.1:$C3" endpoint health >/dev/null 2>&1; do sleep 0.2; done
ENDPOINTS="\"http://127.0.0.1:$C1\", \"http://127.0.0.1:$C2\", \"http://127.0.0.1:$C3\""
declare -A RPORT RPID
for id in r1 r2 r3; do
  RPORT[$id]=$(port)
  coordinator_conf "$id" "${RPORT[$id]}" "$ENDPOINTS" 10s
  sed -i 's|prefix = "/bench-'"$id"'"|prefix = "/bench-ha"|' "$W/$id.toml"
  "$S" coordinator --config "$W/$id.toml" 2>"$W/$id.log" &
  RPID[$id]=$!; PIDS+=(${RPID[$id]})
done
op() { "$S" --json "$@" --ca "$W/pki/ca.pem" --cert "$W/pki/ops.pem" --key "$W/pki/ops.key"; }
leader() { op status --coordinator "127.0.0.1:$1" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["leader_id"])' 2>/dev/null || true; }
L=""; until [ -n "$L" ]; do L=$(leader "${RPORT[r1]}"); sleep 0.2; done
echo "leader: $L"
OTHER=r1; [ "$L" = r1 ] && OTHER=r2
T0=$(date +%s.%N)
kill -9 "${RPID[$L]}"
N=""
while :; do
  N=$(leader "${RPORT[$OTHER]}")
  if [ -n "$N" ] && [ "$N" != "$L" ]; then break; fi
  sleep 0.05
done
T1=$(date +%s.%N)
echo "new leader $N after $(echo "$T1 - $T0" | bc -l | cut -c1-5) s (target: within TTL + 2 s = 12 s)"
echo "work directory: $W (remove it when done)"
