#!/usr/bin/env bash
# Failover timings: a planned switchover (fence, catch up, promote PostgreSQL
# and Redis, flip a Route 53 record in moto, post-checks, the old primary
# rewound into a standby), the failback that follows it, and an unplanned
# failover (the whole primary region stopped with SIGSTOP, detected by the
# two-signal rule, then the same steps), each RUNS times (default 3) on a
# fresh pair of regions: a PostgreSQL 15 primary with a pg_basebackup
# standby, a Redis master with a replica, one agent per region, a --dev
# coordinator with a 1 s heartbeat. Prints min / median / max of the total
# and of each step, against the anchors measured on this kind of machine
# (Patroni 4.1: switchover 3.3 s, host loss 20-30 s at its defaults; Redis
# Sentinel 5.5 s at down-after-milliseconds 5000) and the goals (switchover
# under 3 s with zero loss, unplanned under 10 s including detection).
# A load generator writes to the primary PostgreSQL and Redis throughout
# (one INSERT and one SET every 2 ms, each acknowledgement timed); the loss
# it measured (acknowledged writes the new primary lacks, as rows and as
# time) is printed beside the RPO Seawall reported.
#
#   bench/failover.sh [--runs N] [--work DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export AWS_EC2_METADATA_DISABLED=true

RUNS=3
WORK=${TMPDIR:-/tmp}/seawall-failoverbench
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 64 ;;
  esac
done
PGBIN=${SEAWALL_PG_BIN:-/usr/lib/postgresql/15/bin}
for t in redis-server redis-cli python3 moto_server "$PGBIN/initdb" "$PGBIN/pg_basebackup"; do
  command -v "$t" >/dev/null || { echo "$t missing: run scripts/setup.sh" >&2; exit 1; }
done
cargo build --release --quiet
S=$PWD/target/release/seawall
rm -rf "$WORK"; mkdir -p "$WORK"; chmod 755 "$WORK"
PIDS=()
STOPPED=()
as_pg() { runuser -u postgres -- "$@"; }
stop_world() {
  for p in "${STOPPED[@]}"; do kill -CONT "$p" 2>/dev/null || true; done
  STOPPED=()
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  PIDS=()
  for d in "$W"/pg-*/data; do
    [ -d "$d" ] && as_pg "$PGBIN/pg_ctl" -D "$d" -m immediate stop >/dev/null 2>&1 || true
  done
  true
}
cleanup() { exec 2>/dev/null; [ -n "${W:-}" ] && stop_world; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

"$S" certs --dir "$WORK/pki" -q ca
"$S" certs --dir "$WORK/pki" -q operator --name ops
"$S" certs --dir "$WORK/pki" -q coordinator --name c1 --host 127.0.0.1
"$S" certs --dir "$WORK/pki" -q agent --name w1 --region west
"$S" certs --dir "$WORK/pki" -q agent --name e1 --region east
printf testing > "$WORK/route53.secret"; chmod 600 "$WORK/route53.secret"

# world DIR: both regions, moto with the record, coordinator, agents.
world() {
  W=$1; mkdir -p "$W"; chmod 755 "$W"
  PG1=$(port); PG2=$(port); R1=$(port); R2=$(port); MOTO=$(port); CP=$(port)
  mkdir -p "$W/pg-west" "$W/pg-east"; chown postgres "$W/pg-west" "$W/pg-east"
  as_pg "$PGBIN/initdb" -A trust -U postgres --no-sync -D "$W/pg-west/data" >/dev/null
  printf "port = $PG1\nunix_socket_directories = '$W/pg-west'\nlisten_addresses = '127.0.0.1'\nwal_log_hints = on\nwal_keep_size = '256MB'\n" >> "$W/pg-west/data/postgresql.conf"
  as_pg "$PGBIN/pg_ctl" -D "$W/pg-west/data" -l "$W/pg-west/server.log" -w start >/dev/null
  as_pg "$PGBIN/pg_basebackup" -D "$W/pg-east/data" -R -X stream -d "host=$W/pg-west port=$PG1 user=postgres"
  printf "port = $PG2\nunix_socket_directories = '$W/pg-east'\n" >> "$W/pg-east/data/postgresql.conf"
  as_pg "$PGBIN/pg_ctl" -D "$W/pg-east/data" -l "$W/pg-east/server.log" -w start >/dev/null
  # With a config file, as a service manager runs it: the fence is kept
  # over a restart with CONFIG REWRITE.
  : > "$W/redis1.conf"; : > "$W/redis2.conf"
  redis-server "$W/redis1.conf" --port "$R1" --bind 127.0.0.1 --dir "$W" --save "" --appendonly no >"$W/redis1.log" 2>&1 &
  PIDS+=($!); REDIS1=$!; disown
  redis-server "$W/redis2.conf" --port "$R2" --bind 127.0.0.1 --dir "$W" --save "" --appendonly no --replicaof 127.0.0.1 "$R1" >"$W/redis2.log" 2>&1 &
  PIDS+=($!); disown
  moto_server -H 127.0.0.1 -p "$MOTO" >"$W/moto.log" 2>&1 &
  PIDS+=($!); disown
  until (exec 3<>/dev/tcp/127.0.0.1/$MOTO) 2>/dev/null; do sleep 0.1; done
  ZONE=$(python3 - "$MOTO" <<'EOT'
import sys, boto3
c = boto3.client("route53", endpoint_url=f"http://127.0.0.1:{sys.argv[1]}",
                 aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
zone = c.create_hosted_zone(Name="shop.example.com.", CallerReference="bench")["HostedZone"]["Id"].split("/")[-1]
# UPSERT: moto refuses a later batch whose CREATE repeats a journaled
# CREATE while the name exists, even after the batch's own DELETE.
c.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": [{"Action": "UPSERT", "ResourceRecordSet": {
    "Name": "db.shop.example.com.", "Type": "CNAME", "TTL": 30, "ResourceRecords": [{"Value": "db-west.example.com"}]}}]})
print(zone)
EOT
)
  cat > "$W/c1.toml" <<EOF
id = "c1"
listen = "127.0.0.1:$CP"
heartbeat = "1s"
[tls]
ca = "$WORK/pki/ca.pem"
cert = "$WORK/pki/c1.pem"
key = "$WORK/pki/c1.key"
[dev]
state = "$W/state.redb"
EOF
  INTERVAL=1s ZONE="$ZONE" MOTO="$MOTO" SECRET_FILE="$WORK/route53.secret" \
    PG1="$PG1" PG2="$PG2" R1="$R1" R2="$R2" \
    python3 bench/lib/render.py bench/topology/two-regions.toml bench/topology/shop-failover.toml >> "$W/c1.toml"
  "$S" coordinator --dev --config "$W/c1.toml" 2>"$W/c1.log" &
  PIDS+=($!); disown
  until (exec 3<>/dev/tcp/127.0.0.1/$CP) 2>/dev/null; do sleep 0.1; done
  for a in "w1 west pg-west $PG1 $R1 $PG2" "e1 east pg-east $PG2 $R2 $PG1"; do
    set -- $a
    printf 'bench password' > "$W/$1.password"; chmod 600 "$W/$1.password"
    "$S" -q -r "$W/repo-$1" --password-file "$W/$1.password" init
    cat > "$W/$1.toml" <<EOF
id = "$1"
region = "$2"
coordinators = ["127.0.0.1:$CP"]
state_dir = "$W/state-$1"
[tls]
ca = "$WORK/pki/ca.pem"
cert = "$WORK/pki/$1.pem"
key = "$WORK/pki/$1.key"
[repository]
repo = "$W/repo-$1"
password_file = "$W/$1.password"
[[sources]]
name = "db"
kind = "postgres"
dsn = "host=$W/$3 port=$4 user=postgres dbname=postgres"
rebuild_from = ["127.0.0.1:$6"]
[[sources]]
name = "cache"
kind = "redis"
url = "redis://127.0.0.1:$5"
EOF
    "$S" agent --config "$W/$1.toml" 2>"$W/$1.log" &
    PIDS+=($!); disown
    [ "$1" = w1 ] && AGENT1=$!
  done
  T0=$(date +%s)
  until op replication --service shop >/dev/null 2>&1; do
    [ $(( $(date +%s) - T0 )) -gt 60 ] && { echo "replication not ok after 60 s" >&2; exit 1; }
    sleep 0.5
  done
}
op() { "$S" --json "$@" --coordinator "127.0.0.1:$CP" --ca "$WORK/pki/ca.pem" --cert "$WORK/pki/ops.pem" --key "$WORK/pki/ops.key"; }
# `failover run --wait` returns once the new primary is served; the old
# primary's follow steps go on: this waits for the end of the failover in FILE.
# The record in FILE is replaced by the finished one.
settled() {
  local id
  id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$1")
  op failover status "$id" --watch > /dev/null
  op failover status "$id" > "$1"
}

# The load generator: one psql and one redis-cli session, each write's
# acknowledgement written to OUT as "N UNIX_MS".
cat > "$WORK/load.py" <<'EOT'
import subprocess, sys, threading, time
kind, target, first, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), open(sys.argv[4], "w")
if kind == "pg":
    p = subprocess.Popen([sys.argv[5], "-X", "-A", "-t", "-d", target], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
    p.stdin.write("CREATE TABLE IF NOT EXISTS load (n bigint PRIMARY KEY);\n")
    line = lambda n: f"INSERT INTO load VALUES ({n}) RETURNING n;\n"
else:
    p = subprocess.Popen(["redis-cli", "-p", target], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
    line = lambda n: f"SET {sys.argv[5]}:{n} {n}\n"
def feed():
    n = first
    try:
        while True:
            p.stdin.write(line(n)); p.stdin.flush(); n += 1; time.sleep(0.002)
    except Exception:
        pass
threading.Thread(target=feed, daemon=True).start()
n = first
for l in p.stdout:
    l = l.strip()
    if kind == "pg" and l.isdigit():
        out.write(f"{l} {int(time.time()*1000)}\n"); out.flush()
    elif kind == "redis" and l == "OK":
        out.write(f"{n} {int(time.time()*1000)}\n"); out.flush(); n += 1
EOT
# load START PGDSN REDISPORT FIRST PREFIX: starts both generators.
load() {
  python3 "$WORK/load.py" pg "$1" "$3" "$W/pg-$4.acks" "$PGBIN/psql" & LOADS+=($!); PIDS+=($!); disown
  python3 "$WORK/load.py" redis "$2" "$3" "$W/redis-$4.acks" "$4" & LOADS+=($!); PIDS+=($!); disown
  until [ "$(cat "$W/pg-$4.acks" 2>/dev/null | wc -l)" -gt 200 ] && [ "$(cat "$W/redis-$4.acks" 2>/dev/null | wc -l)" -gt 200 ]; do sleep 0.1; done
}
unload() { for p in "${LOADS[@]}"; do kill "$p" 2>/dev/null || true; done; LOADS=(); sleep 0.2; }
# loss FAILOVER_JSON NEW_PG_DSN NEW_REDIS_PORT TAG: adds what the generator
# measured (acknowledged writes the new primary lacks) to the record.
loss() {
  local first last present_pg rfirst rlast present_redis
  first=$(head -1 "$W/pg-$4.acks" | cut -d' ' -f1); last=$(tail -1 "$W/pg-$4.acks" | cut -d' ' -f1)
  present_pg=$(as_pg "$PGBIN/psql" -X -A -t -d "$2" -c "SELECT count(*) FROM load WHERE n BETWEEN $first AND $last")
  rfirst=$(head -1 "$W/redis-$4.acks" | cut -d' ' -f1); rlast=$(tail -1 "$W/redis-$4.acks" | cut -d' ' -f1)
  present_redis=$(redis-cli -p "$3" EVAL "local n = 0 for i = tonumber(ARGV[1]), tonumber(ARGV[2]) do n = n + redis.call('EXISTS', ARGV[3] .. ':' .. i) end return n" 0 "$rfirst" "$rlast" "$4")
  python3 - "$1" "$W/pg-$4.acks" "$first" "$last" "$present_pg" "$rfirst" "$rlast" "$present_redis" <<'EOT'
import json, sys
path, acks = sys.argv[1], sys.argv[2]
first, last, present, rfirst, rlast, rpresent = map(int, sys.argv[3:])
f = json.load(open(path))
times = {int(a): int(b) for a, b in (l.split() for l in open(acks))}
# Replication is in order: what is missing is the newest acknowledged.
got = first + present - 1
f["load"] = {"pg_acked": last - first + 1, "pg_lost": last - got,
             "lost_ms": 0 if got >= last else times[last] - times[got + 1],
             "redis_acked": rlast - rfirst + 1, "redis_lost": rlast - rfirst + 1 - rpresent}
json.dump(f, open(path, "w"))
EOT
}
LOADS=()

for i in $(seq 1 "$RUNS"); do
  echo "== switchover $i/$RUNS"
  world "$WORK/switchover-$i"
  load "host=127.0.0.1 port=$PG1 user=postgres dbname=postgres" "$R1" 1 load
  op failover run shop --to east --switchover --wait > "$W/failover.json" || { cat "$W/failover.json" >&2; op failover plan shop --to east --switchover >&2; exit 1; }
  unload
  settled "$W/failover.json"
  loss "$W/failover.json" "host=$W/pg-east port=$PG2 user=postgres dbname=postgres" "$R2" load
  cp "$W/failover.json" "$WORK/switchover-$i.json"
  echo "== failback $i/$RUNS: back to the west under load in the east"
  load "host=127.0.0.1 port=$PG2 user=postgres dbname=postgres" "$R2" 1000000 back
  op failover run shop --failback --wait > "$W/failback.json" || { cat "$W/failback.json" >&2; exit 1; }
  unload
  settled "$W/failback.json"
  loss "$W/failback.json" "host=$W/pg-west port=$PG1 user=postgres dbname=postgres" "$R1" back
  cp "$W/failback.json" "$WORK/failback-$i.json"
  stop_world
done
for i in $(seq 1 "$RUNS"); do
  echo "== unplanned $i/$RUNS: the west region stopped (agent, PostgreSQL, Redis)"
  world "$WORK/unplanned-$i"
  load "host=127.0.0.1 port=$PG1 user=postgres dbname=postgres" "$R1" 1 load
  POSTMASTER=$(head -1 "$W/pg-west/data/postmaster.pid")
  STOPPED=("$POSTMASTER" $(pgrep -P "$POSTMASTER" || true) "$REDIS1" "$AGENT1")
  CUT=$(date +%s%3N)
  for p in "${STOPPED[@]}"; do kill -STOP "$p"; done
  until op failover list > "$W/list.json" 2>/dev/null && python3 -c 'import json,sys; l=json.load(open(sys.argv[1])); sys.exit(0 if l and l[0]["state"]!="running" else 1)' "$W/list.json"; do sleep 0.1; done
  DONE=$(date +%s%3N)
  python3 - "$W/list.json" "$CUT" "$DONE" > "$WORK/unplanned-$i.json" <<'EOT'
import json, sys
f = json.load(open(sys.argv[1]))[0]
f["wall_ms"] = int(sys.argv[3]) - int(sys.argv[2])
print(json.dumps(f))
EOT
  for p in "${STOPPED[@]}"; do kill -CONT "$p" 2>/dev/null || true; done
  STOPPED=()
  unload
  loss "$WORK/unplanned-$i.json" "host=$W/pg-east port=$PG2 user=postgres dbname=postgres" "$R2" load
  stop_world
done

python3 - "$WORK" "$RUNS" <<'EOT'
import json, statistics, sys
work, runs = sys.argv[1], int(sys.argv[2])
def load(kind):
    return [json.load(open(f"{work}/{kind}-{i}.json")) for i in range(1, runs + 1)]
def row(name, values, goal=""):
    values = sorted(values)
    print(f"  {name:<28} {values[0]/1000:7.2f} {statistics.median(values)/1000:7.2f} {values[-1]/1000:7.2f}  {goal}")
for kind, goal in (("switchover", "goal < 3 s, zero loss; Patroni switchover 3.3 s"),
                   ("failback", "the switchover back; its rebuild in its own step"),
                   ("unplanned", "goal < 10 s incl. detection; Patroni 20-30 s, Sentinel 5.5 s (Redis only)")):
    fs = load(kind)
    assert all(f["state"] == "succeeded" for f in fs), [f.get("error") for f in fs]
    print(f"{kind} ({runs} runs)                  min  median     max  (seconds)")
    row("RTO reported", [f["rto_ms"] for f in fs], goal)
    if kind == "unplanned":
        row("wall clock, fault to done", [f["wall_ms"] for f in fs])
        row("detection (last heard to start)", [f["started_unix_ms"] - f["detected_unix_ms"] for f in fs])
    for step in [s["name"] for s in fs[0]["steps"]]:
        took = []
        for f in fs:
            s = next(x for x in f["steps"] if x["name"] == step)
            took.append(max(0, s["ended_unix_ms"] - s["started_unix_ms"]))
        row(f"  {step}", took)
    print(f"  RPO reported (ms): {[f.get('rpo_ms') for f in fs]}; WAL gap (bytes): {[f.get('lsn_gap_bytes') for f in fs]}; Redis offset gap: {[f.get('offset_gap') for f in fs]}")
    print(f"  loss measured by the load generator: lost ms {[f['load']['lost_ms'] for f in fs]}; "
          f"PostgreSQL rows lost/acked {[(f['load']['pg_lost'], f['load']['pg_acked']) for f in fs]}; "
          f"Redis keys lost/acked {[(f['load']['redis_lost'], f['load']['redis_acked']) for f in fs]}")
EOT
echo "work directory: $WORK (remove it when done)"
