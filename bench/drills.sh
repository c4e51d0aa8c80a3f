#!/usr/bin/env bash
# Restore drill overhead: for each kind of source, on the benchmark datasets
# (a ~2 GB PostgreSQL database, 1,000,000 Redis keys of ~1 KiB, the ~2.1 GiB
# files set), the plain restore Seawall users run by hand beside a restore
# drill of the same snapshot (run through `seawall run-operation`, the child
# the agent runs each job in): what the drill adds (scratch setup, the
# checks, teardown) as a share of the restore.
#
#   bench/drills.sh [--scale 50] [--events-rows 6000000] [--keys 1000000]
#                   [--dump-mib 1800] [--small-files 25000] [--work DIR]
#                   [--only files,postgres,redis]
#
# Plain restores, as users run them:
#   files:     seawall restore latest --to DIR
#   postgres:  seawall restore latest --pg-datadir DIR --start (base backup
#              laid down, verified against its manifest, recovered, promoted)
#   redis:     seawall restore latest --redis-datadir DIR --start (loaded)
# The drill does the same and then: files re-read and compared with the
# snapshot; PostgreSQL's tables listed with the catalog's row estimates
# (a deep drill, run too: row counts of every table and pg_amcheck); key
# counts per database against the snapshot's; then every scratch server
# stopped, its directory removed and its port checked closed.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

SCALE=50
EVENTS=6000000
KEYS=1000000
DUMP_MIB=1800
SMALL=25000
WORK=${TMPDIR:-/tmp}/seawall-drillbench
ONLY=files,postgres,redis
while [ $# -gt 0 ]; do
  case "$1" in
    --scale) SCALE=$2; shift 2 ;;
    --events-rows) EVENTS=$2; shift 2 ;;
    --keys) KEYS=$2; shift 2 ;;
    --dump-mib) DUMP_MIB=$2; shift 2 ;;
    --small-files) SMALL=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 64 ;;
  esac
done
PGBIN=${SEAWALL_PG_BIN:-/usr/lib/postgresql/15/bin}
for t in "$PGBIN/initdb" redis-server redis-cli python3 bc; do
  command -v "$t" >/dev/null || { echo "$t missing: run scripts/setup.sh" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "run as root (the PostgreSQL servers run as postgres)" >&2; exit 1; }
cargo build --release --quiet
SEAWALL=$PWD/target/release/seawall
export SEAWALL_PASSWORD=bench-password

cleanup() {
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/pg/data" -m immediate stop >/dev/null 2>&1 || true
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/plain-pg" -m immediate stop >/dev/null 2>&1 || true
  [ -f "$WORK/redis.pid" ] && kill "$(cat "$WORK/redis.pid")" 2>/dev/null || true
  [ -f "$WORK/plain-redis/redis.pid" ] && kill "$(cat "$WORK/plain-redis/redis.pid")" 2>/dev/null || true
}
trap cleanup EXIT
cleanup
rm -rf "$WORK"; mkdir -p "$WORK"; chmod 755 "$WORK"
W=$WORK
printf '%s' "$SEAWALL_PASSWORD" > "$W/password"; chmod 600 "$W/password"
"$SEAWALL" -q --repo "$W/repo" init
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

timed() {
  local name=$1; shift
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  local start end
  start=$(date +%s.%N)
  "$@" >"$W/$name.log" 2>&1 || { echo "$name failed:"; tail -20 "$W/$name.log"; exit 1; }
  end=$(date +%s.%N)
  echo "$end - $start" | bc -l > "$W/$name.secs"
}
secs() { printf '%.2f' "$(cat "$W/$1.secs")"; }

# drill NAME SOURCE [deep]: a restore drill of SOURCE's newest snapshot,
# timed, with its phases kept (the outcome's JSON).
drill() {
  local name=$1 source=$2 deep=false
  [ "${3:-}" = deep ] && deep=true
  cat > "$W/$name.request.json" <<JSON
{"job_id":"bench-$name","origin":{"region":"bench","agent":"bench"},
 "repository":{"repo":"$W/repo","password_file":"$W/password","s3_endpoint":null,"s3_region":null,"s3_path_style":false,
   "s3_sse":null,"s3_sse_kms_key_id":null,"s3_access_key_id":null,"s3_secret_access_key_file":null,"s3_max_concurrency":null},
 "lock_wait_secs":60,
 "operation":{"kind":"restore_drill","request":{"source":"$source","point":"latest","check_file":null,
   "drill_id":"bench","scratch_root":"$W/scratch","pg_bin":"$PGBIN","redis_server":"$(command -v redis-server)","deep":$deep}}}
JSON
  timed "$name" sh -c "'$SEAWALL' run-operation < '$W/$name.request.json' > '$W/$name.json'"
  python3 - "$W/$name.json" <<'PY'
import json, sys
o = json.load(open(sys.argv[1]))
if o["status"] != "succeeded":
    sys.exit("drill failed: %s" % json.dumps(o.get("failure")))
for p in o["output"]["phases"]:
    print("    %-9s %7.2f s  %s" % (p["name"], (p["ended_unix_ms"] - p["started_unix_ms"]) / 1000, p["detail"][:90]))
PY
}

# report KIND PLAIN DRILL: the drill's own phases (everything but its
# restore: choosing the snapshot, the scratch directory, the checks,
# teardown) against the plain restore; the totals beside them. Single
# runs of a few seconds move by a second between runs, so the phases the
# drill timed itself are the figure, not the difference of the totals.
report() {
  local kind=$1 plain=$2 drilled=$3
  local p d own
  p=$(cat "$W/$plain.secs"); d=$(cat "$W/$drilled.secs")
  own=$(python3 -c 'import json,sys; o=json.load(open(sys.argv[1])); print(sum(x["ended_unix_ms"]-x["started_unix_ms"] for x in o["output"]["phases"] if x["name"]!="restore")/1000)' "$W/$drilled.json")
  printf '%-9s plain restore %6.2f s | drill %6.2f s, its own phases %5.2f s = %5.1f%% of the plain restore\n' \
    "$kind" "$p" "$d" "$own" "$(echo "$own * 100 / $p" | bc -l)" | tee -a "$W/summary"
}

wanted() { case ",$ONLY," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

if wanted files; then
echo "== files: $DUMP_MIB MiB dump-like file + $SMALL small files"
"$SEAWALL" bench-data "$W/data" --dump-mib "$DUMP_MIB" --small-files "$SMALL"
"$SEAWALL" -q --repo "$W/repo" backup files "$W/data" --tag source=files
timed files-plain "$SEAWALL" -q --repo "$W/repo" restore latest --to "$W/plain-files"
rm -rf "$W/plain-files"
drill files-drill files
report files files-plain files-drill
rm -rf "$W/data"
fi

if wanted postgres; then

echo "== postgres: pgbench scale $SCALE + $EVENTS event rows, physical"
mkdir -p "$W/pg"; chown postgres "$W/pg"
as_pg() { runuser -u postgres -- "$@"; }
as_pg "$PGBIN/initdb" -A trust -U postgres -D "$W/pg/data" >/dev/null
PGPORT=$(free_port)
cat >> "$W/pg/data/postgresql.conf" <<CONF
port = $PGPORT
unix_socket_directories = '$W/pg'
listen_addresses = ''
max_wal_size = 4GB
CONF
as_pg "$PGBIN/pg_ctl" -D "$W/pg/data" -l "$W/pg/server.log" -w start >/dev/null
DSN="host=$W/pg port=$PGPORT user=postgres dbname=bench"
"$PGBIN/psql" -X -q -h "$W/pg" -p "$PGPORT" -U postgres -c "CREATE DATABASE bench"
"$PGBIN/pgbench" -i -s "$SCALE" -q -h "$W/pg" -p "$PGPORT" -U postgres bench 2>&1 | tail -1
"$PGBIN/psql" -X -q -h "$W/pg" -p "$PGPORT" -U postgres bench <<SQL
CREATE TABLE events (id bigserial PRIMARY KEY, at timestamptz, agent int, kind text, amount numeric, region text, note text, h text);
INSERT INTO events (at, agent, kind, amount, region, note, h)
SELECT now() - (g % 86400) * interval '1 second', g % 5000, (ARRAY['login','upload','retry','fail','done'])[1 + g % 5],
       (g % 10000) / 100.0, (ARRAY['eu','us','ap'])[1 + g % 3], 'event ' || g || ' from agent ' || (g % 5000) || ' after ' || (g % 97) || ' tries',
       md5(g::text)
FROM generate_series(1, $EVENTS) g;
SQL
echo "database: $("$PGBIN/psql" -X -A -t -h "$W/pg" -p "$PGPORT" -U postgres -c "SELECT pg_size_pretty(pg_database_size('bench'))")"
SEAWALL_PG_BIN=$PGBIN "$SEAWALL" -q --repo "$W/repo" backup postgres --physical --dsn "$DSN" --tag source=pg
as_pg "$PGBIN/pg_ctl" -D "$W/pg/data" -m fast stop >/dev/null
PLAINPORT=$(free_port)
timed pg-plain env SEAWALL_PG_BIN="$PGBIN" "$SEAWALL" -q --repo "$W/repo" restore latest \
  --pg-datadir "$W/plain-pg" --start --pg-port "$PLAINPORT" --restore-command false
as_pg "$PGBIN/pg_ctl" -D "$W/plain-pg" -m immediate stop >/dev/null
rm -rf "$W/plain-pg"
drill pg-drill pg
report postgres pg-plain pg-drill
drill pg-deep pg deep
report "pg (deep)" pg-plain pg-deep

echo "== postgres: point-in-time restore replaying the WAL of two updates (1% of events, 1% of accounts scattered)"
# The WAL archive is the repository's: the server pushes as postgres.
chown -R postgres "$W/repo" "$W/password"
cat >> "$W/pg/data/postgresql.conf" <<CONF
archive_mode = on
archive_command = '$SEAWALL --repo $W/repo --password-file $W/password -q wal-push %p'
CONF
as_pg "$PGBIN/pg_ctl" -D "$W/pg/data" -l "$W/pg/server.log" -w start >/dev/null
SEAWALL_PG_BIN=$PGBIN "$SEAWALL" -q --repo "$W/repo" backup postgres --physical --dsn "$DSN" --tag source=pg
"$PGBIN/psql" -X -q -h "$W/pg" -p "$PGPORT" -U postgres bench \
  -c "UPDATE events SET amount = amount + 1 WHERE id > (SELECT max(id) FROM events) * 99 / 100" \
  -c "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 100 = 0"
SEG=$("$PGBIN/psql" -X -A -t -h "$W/pg" -p "$PGPORT" -U postgres -c "SELECT pg_walfile_name(pg_switch_wal())")
until [ "$("$PGBIN/psql" -X -A -t -h "$W/pg" -p "$PGPORT" -U postgres -c "SELECT coalesce(last_archived_wal,'') >= '$SEG' FROM pg_stat_archiver")" = t ]; do sleep 0.5; done
echo "archived WAL to replay: $(ls "$W/repo/wal/00000001" | wc -l) segments in the repository"
as_pg "$PGBIN/pg_ctl" -D "$W/pg/data" -m fast stop >/dev/null
PLAINPORT=$(free_port)
timed pitr-plain env SEAWALL_PG_BIN="$PGBIN" "$SEAWALL" -q --repo "$W/repo" --password-file "$W/password" \
  restore latest --pg-datadir "$W/plain-pg" --start --pg-port "$PLAINPORT"
as_pg "$PGBIN/pg_ctl" -D "$W/plain-pg" -m immediate stop >/dev/null
rm -rf "$W/plain-pg"
drill pitr-drill pg
report "pg (PITR)" pitr-plain pitr-drill
drill pitr-deep pg deep
report "PITR deep" pitr-plain pitr-deep
fi

if wanted redis; then

echo "== redis: $KEYS keys of about 1 KiB"
mkdir -p "$W/redis"
RPORT=$(free_port)
redis-server --port "$RPORT" --bind 127.0.0.1 --dir "$W/redis" --save "" --appendonly no \
  --daemonize yes --pidfile "$W/redis.pid" --logfile "$W/redis.log"
until redis-cli -p "$RPORT" ping >/dev/null 2>&1; do sleep 0.1; done
python3 bench/lib/redis_keys.py 1 0 "$KEYS" | redis-cli -p "$RPORT" --pipe >/dev/null
"$SEAWALL" -q --repo "$W/repo" backup redis --url "redis://127.0.0.1:$RPORT" --tag source=cache
kill "$(cat "$W/redis.pid")"; rm -f "$W/redis.pid"
PLAINR=$(free_port)
timed redis-plain "$SEAWALL" -q --repo "$W/repo" restore latest --redis-datadir "$W/plain-redis" --start --redis-port "$PLAINR"
REDISCLI_AUTH=$(awk '/^requirepass/{print $2}' "$W/plain-redis/seawall-redis.conf") \
  redis-cli -p "$PLAINR" shutdown nosave >/dev/null 2>&1 || true
rm -rf "$W/plain-redis"
drill redis-drill cache
report redis redis-plain redis-drill
fi

echo
echo "== summary (page cache dropped before each run)"
cat "$W/summary"
