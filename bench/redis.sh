#!/usr/bin/env bash
# Redis benchmark: Seawall's RDB backup over the replication protocol against
# the old runbook's approach (BGSAVE, copy the RDB file, gzip -9) and against
# `redis-cli --rdb - | zstd -1 -T0`, side by side in one run on one server
# holding about 1.1 GiB of varied data; then 1% of the keys changed and a
# second backup of each: bytes added.
#
#   bench/redis.sh [--keys N] [--work DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

KEYS=1000000
WORK=${TMPDIR:-/tmp}/seawall-redisbench
while [ $# -gt 0 ]; do
  case "$1" in
    --keys) KEYS=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 64 ;;
  esac
done
for t in redis-server redis-cli zstd gzip /usr/bin/time bc python3; do
  command -v "$t" >/dev/null || { echo "$t missing: run scripts/setup.sh" >&2; exit 1; }
done
cargo build --release --quiet
SEAWALL=$PWD/target/release/seawall
export SEAWALL_PASSWORD=bench-password

[ -f "$WORK/redis.pid" ] && kill "$(cat "$WORK/redis.pid")" 2>/dev/null || true
rm -rf "$WORK"; mkdir -p "$WORK/redis"
W=$WORK
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# No 5 s wait before diskless transfers: redis-cli --rdb asks for one.
redis-server --port "$PORT" --bind 127.0.0.1 --dir "$W/redis" --save "" --appendonly no --repl-diskless-sync-delay 0 \
  --daemonize yes --pidfile "$W/redis.pid" --logfile "$W/redis.log"
until redis-cli -p "$PORT" ping >/dev/null 2>&1; do sleep 0.1; done
cli() { redis-cli -p "$PORT" "$@"; }

# gen SEED FIRST COUNT: SET commands for keys FIRST..FIRST+COUNT, values ~1 KiB of varied text.
gen() { python3 bench/lib/redis_keys.py "$@"; }
echo "loading $KEYS keys ..."
gen 1 0 "$KEYS" | cli --pipe >/dev/null
MEM=$(cli info memory | awk -F: '/^used_memory:/ {print $2}' | tr -d '\r')
echo "redis used_memory: $MEM bytes"

run() {
  local name=$1; shift
  local start end
  sync
  start=$(date +%s.%N)
  /usr/bin/time -f '%M' -o "$W/$name.rss" "$@" >"$W/$name.log" 2>&1 || { echo "$name failed:"; tail -20 "$W/$name.log"; exit 1; }
  end=$(date +%s.%N)
  sync
  echo "$end - $start" | bc -l > "$W/$name.secs"
}
secs() { cat "$W/$1.secs"; }
rss_mib() { echo "$(tail -1 "$W/$1.rss") / 1024" | bc; }
size() { du -sb "$@" 2>/dev/null | awk '{s+=$1} END {print s+0}'; }
ratio() { echo "scale=2; $1 / $2" | bc -l; }

# The runbook: BGSAVE, wait for it, copy the file, gzip -9 the copy.
cat > "$W/runbook.sh" <<EOF
set -e
before=\$(redis-cli -p $PORT lastsave)
redis-cli -p $PORT bgsave >/dev/null
while [ "\$(redis-cli -p $PORT lastsave)" = "\$before" ]; do sleep 0.05; done
cp $W/redis/dump.rdb $W/runbook-\$1.rdb
gzip -9 -f $W/runbook-\$1.rdb
EOF

"$SEAWALL" -r "$W/sw" init -q
"$SEAWALL" -r "$W/swdl" init -q
round() {
  local r=$1
  run "runbook$r" bash "$W/runbook.sh" "$r"
  run "clizstd$r" bash -c "redis-cli -p $PORT --rdb - 2>/dev/null | zstd -1 -T0 -q -o $W/cli$r.rdb.zst"
  local before; before=$(size "$W/sw")
  run "seawall$r" "$SEAWALL" -q -r "$W/sw" backup redis --url "redis://127.0.0.1:$PORT"
  echo $(( $(size "$W/sw") - before )) > "$W/seawall$r.added"
  # The same transfer form redis-cli gets (diskless: the server does not write the RDB first).
  before=$(size "$W/swdl")
  run "seawalldl$r" "$SEAWALL" -q -r "$W/swdl" backup redis --url "redis://127.0.0.1:$PORT" --diskless
  echo $(( $(size "$W/swdl") - before )) > "$W/seawalldl$r.added"
  local rdb; rdb=$(size "$W/redis/dump.rdb")
  printf '%-36s %7s s %8s MiB/s %12s bytes %6s MiB RSS\n' \
    "runbook BGSAVE + cp + gzip -9" "$(secs "runbook$r")" "$(echo "scale=1; $rdb/1048576/$(secs "runbook$r")" | bc)" "$(size "$W/runbook-$r.rdb.gz")" "$(rss_mib "runbook$r")" \
    "redis-cli --rdb - | zstd -1 -T0" "$(secs "clizstd$r")" "$(echo "scale=1; $rdb/1048576/$(secs "clizstd$r")" | bc)" "$(size "$W/cli$r.rdb.zst")" "$(rss_mib "clizstd$r")" \
    "seawall backup redis" "$(secs "seawall$r")" "$(echo "scale=1; $rdb/1048576/$(secs "seawall$r")" | bc)" "$(cat "$W/seawall$r.added")" "$(rss_mib "seawall$r")" \
    "seawall backup redis --diskless" "$(secs "seawalldl$r")" "$(echo "scale=1; $rdb/1048576/$(secs "seawalldl$r")" | bc)" "$(cat "$W/seawalldl$r.added")" "$(rss_mib "seawalldl$r")"
  echo "RDB $rdb bytes; seawall vs runbook: $(ratio "$(secs "runbook$r")" "$(secs "seawall$r")")x faster; vs redis-cli|zstd: $(ratio "$(secs "clizstd$r")" "$(secs "seawall$r")")x; --diskless vs redis-cli|zstd (same transfer form): $(ratio "$(secs "clizstd$r")" "$(secs "seawalldl$r")")x"
}
echo "== first backup"
round 1
echo "== 1% of keys changed ($((KEYS / 100)) keys rewritten), second backup (bytes added; the others store everything again)"
# Spread the changed keys over the keyspace: every 100th key gets a new value.
python3 - "$KEYS" <<'EOF' | cli --pipe >/dev/null
import random, sys
n = int(sys.argv[1]); rnd = random.Random(3)
for i in range(0, n, 100):
    kind = ("agent", "task:pending", "session", "metrics", "model:cache")[i % 5]
    val = '{"id":%d,"changed":%d}' % (i, rnd.randrange(10**9))
    key = "%s:%d" % (kind, i)
    sys.stdout.write("*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, len(val), val))
EOF
round 2
kill "$(cat "$W/redis.pid")" 2>/dev/null || true
echo "work directory: $W (remove it when done)"
