#!/usr/bin/env bash
# PostgreSQL benchmark: Seawall against the old runbook's pipeline
# (pg_dump --format=custom --compress=9, then gzip -9), against
# pg_dump | zstd -1 -T0, and against pgBackRest (Debian's package, local
# repository, zstd, process-max 2), side by side in one run on one database:
# pgbench at scale 50 plus a realistic `events` table of about 1.2 GB.
#
#   bench/postgres.sh [--scale N] [--events-rows N] [--work DIR]
#
# Prints backup and restore throughput, sizes, the bytes a second backup
# adds (WAL included) after (a) the newest 1% of events updated and (b) 1%
# of pgbench_accounts updated scattered, and wal-push time per segment.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

SCALE=50
EVENTS=6000000
WORK=${TMPDIR:-/tmp}/seawall-pgbench
while [ $# -gt 0 ]; do
  case "$1" in
    --scale) SCALE=$2; shift 2 ;;
    --events-rows) EVENTS=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 64 ;;
  esac
done

PGBIN=${SEAWALL_PG_BIN:-/usr/lib/postgresql/15/bin}
for t in "$PGBIN/initdb" /usr/bin/pgbackrest /usr/bin/zstd /usr/bin/time /usr/bin/bc; do
  [ -x "$t" ] || { echo "$t missing: run scripts/setup.sh" >&2; exit 1; }
done
cargo build --release --quiet
SEAWALL=$PWD/target/release/seawall
export SEAWALL_PG_BIN=$PGBIN

if [ -f "$WORK/pg/data/postmaster.pid" ]; then
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/pg/data" -m immediate stop >/dev/null 2>&1 || true
fi
rm -rf "$WORK"; mkdir -p "$WORK"; chown postgres "$WORK"
W=$WORK
# As the server's user; a plain command line, so /usr/bin/time can run it too.
PGRUN="runuser -u postgres -- env SEAWALL_PG_BIN=$PGBIN SEAWALL_SPOOL=$W/spool"
as_pg() { $PGRUN "$@"; }
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
DSN="host=$W/pg port=$PORT user=postgres dbname=postgres"
DB="host=$W/pg port=$PORT user=postgres dbname=bench"

# Seawall repository and password, owned by the server's user (archive_command runs as it).
echo bench-password > "$W/password"; chmod 600 "$W/password"; chown postgres "$W/password"
SW="$SEAWALL --repo $W/sw --password-file $W/password"
as_pg $SW init -q
# File-level physical backups go to a repository of their own, so what
# they add is not hidden by the base backups' chunks.
SWF="$SEAWALL --repo $W/swf --password-file $W/password"
as_pg $SWF init -q

# pgBackRest configuration.
cat > "$W/pgbackrest.conf" <<EOF
[global]
repo1-path=$W/pgbr
compress-type=zst
process-max=2
start-fast=y
log-level-console=warn
log-level-file=off
lock-path=$W/pgbr-lock
spool-path=$W/pgbr-spool
archive-async=n

[bench]
pg1-path=$W/pg/data
pg1-socket-path=$W/pg
pg1-port=$PORT
pg1-user=postgres
EOF
chown postgres "$W/pgbackrest.conf"
PGBR="pgbackrest --config=$W/pgbackrest.conf --stanza=bench"

mkdir -p "$W/pg"; chown postgres "$W/pg"
as_pg "$PGBIN/initdb" -A trust -U postgres -D "$W/pg/data" >/dev/null
cat >> "$W/pg/data/postgresql.conf" <<EOF
port = $PORT
unix_socket_directories = '$W/pg'
listen_addresses = ''
shared_buffers = 1GB
max_wal_size = 4GB
checkpoint_timeout = 30min
archive_mode = on
archive_command = '$SW wal-push %p && $PGBR archive-push %p'
EOF
as_pg "$PGBIN/pg_ctl" -D "$W/pg/data" -l "$W/pg/server.log" -w start >/dev/null
as_pg $PGBR stanza-create >/dev/null

psql() { "$PGBIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 "$@"; }
psql "$DSN" -c "CREATE DATABASE bench"
echo "loading pgbench scale $SCALE and $EVENTS realistic event rows ..."
"$PGBIN/pgbench" -i -s "$SCALE" -q "$DB" 2>&1 | tail -1
psql "$DB" <<'EOF'
CREATE TABLE events (
  id bigserial PRIMARY KEY,
  created_at timestamptz NOT NULL,
  user_id integer NOT NULL,
  kind text NOT NULL,
  amount numeric(12,2),
  region text,
  status text,
  message text,
  checksum text
);
EOF
psql "$DB" -c "
INSERT INTO events (created_at, user_id, kind, amount, region, status, message, checksum)
SELECT timestamptz '2025-01-01' + (g * interval '3 seconds') + (random() * interval '2 seconds'),
       (random() * 200000)::int,
       (ARRAY['login','logout','purchase','refund','view','search','upload','share'])[1 + (g % 8)],
       round((random() * 5000)::numeric, 2),
       (ARRAY['eu-west-1','us-east-1','ap-south-1','sa-east-1'])[1 + (g % 4)],
       (ARRAY['ok','ok','ok','retry','failed'])[1 + (random() * 4)::int],
       (ARRAY['user','order','session','cart','item','payment','address','coupon'])[1 + (random()*7)::int] || ' '
         || (ARRAY['created','updated','removed','viewed','shared','exported'])[1 + (random()*5)::int] || ' from '
         || (ARRAY['web','ios','android','api','batch'])[1 + (random()*4)::int] || ' client v'
         || (1 + (random()*9)::int) || '.' || (random()*20)::int || ' after ' || (random()*900)::int || ' ms; ref '
         || substr(md5(random()::text), 1, 12),
       md5(g::text || random()::text)
FROM generate_series(1, $EVENTS) g"
psql "$DB" -c "VACUUM ANALYZE"
psql "$DSN" -c "CHECKPOINT" -c "SELECT pg_switch_wal()" >/dev/null
DBBYTES=$(psql "$DB" -c "SELECT pg_database_size('bench')")
EVBYTES=$(psql "$DB" -c "SELECT pg_total_relation_size('events')")
echo "database bench: $DBBYTES bytes (events table $EVBYTES bytes)"

# run NAME CMD... : times a command, records seconds and peak RSS (KiB).
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
mibs() { echo "scale=1; $DBBYTES / 1048576 / $(secs "$1")" | bc -l; }
wait_archived() {
  local seg
  seg=$(psql "$DSN" -c "SELECT pg_walfile_name(pg_switch_wal())")
  until [ "$(psql "$DSN" -c "SELECT coalesce(last_archived_wal,'') >= '$seg' FROM pg_stat_archiver")" = t ]; do sleep 0.5; done
}
wait_archived

echo "== logical backups (database bench)"
run runbook bash -c "$PGBIN/pg_dump --format=custom --compress=9 --file=$W/runbook.dump '$DB' && gzip -9 $W/runbook.dump"
run dumpzstd bash -c "$PGBIN/pg_dump '$DB' | zstd -1 -T0 -q -o $W/dump.sql.zst"
run swlogical $PGRUN $SW backup postgres --dsn "$DB" --database bench --no-globals
SWREPO0=$(size "$W/sw/data" "$W/sw/index" "$W/sw/snapshots")
printf '%-34s %8s s %9s MiB/s %12s bytes %6s MiB RSS\n' \
  "runbook pg_dump -Z9 + gzip -9" "$(secs runbook)" "$(mibs runbook)" "$(size "$W/runbook.dump.gz")" "$(rss_mib runbook)" \
  "pg_dump | zstd -1 -T0" "$(secs dumpzstd)" "$(mibs dumpzstd)" "$(size "$W/dump.sql.zst")" "$(rss_mib dumpzstd)" \
  "seawall backup postgres" "$(secs swlogical)" "$(mibs swlogical)" "$SWREPO0" "$(rss_mib swlogical)"
echo "seawall logical vs runbook: $(ratio "$(secs runbook)" "$(secs swlogical)")x faster; vs pg_dump|zstd: $(ratio "$(secs dumpzstd)" "$(secs swlogical)")x"

echo "== physical backups"
sw_total() { size "$W/sw"; }
br_total() { size "$W/pgbr"; }
SW_BEFORE=$(sw_total); BR_BEFORE=$(br_total)
run swphys $PGRUN $SW backup postgres --physical --dsn "$DSN"
run brfull $PGRUN $PGBR --type=full backup
SW_FULL=$(( $(sw_total) - SW_BEFORE )); BR_FULL=$(( $(br_total) - BR_BEFORE ))
printf '%-34s %8s s %9s MiB/s %12s bytes %6s MiB RSS\n' \
  "seawall backup --physical" "$(secs swphys)" "$(mibs swphys)" "$SW_FULL" "$(rss_mib swphys)" \
  "pgbackrest backup --type=full" "$(secs brfull)" "$(mibs brfull)" "$BR_FULL" "$(rss_mib brfull)"
echo "seawall physical vs pgbackrest full: $(ratio "$(secs brfull)" "$(secs swphys)")x faster"
swf_total() { size "$W/swf"; }
SWF_BEFORE=$(swf_total)
run swfile $PGRUN $SWF backup postgres --physical --file-level --dsn "$DSN"
printf '%-34s %8s s %9s MiB/s %12s bytes %6s MiB RSS\n' \
  "seawall --physical --file-level" "$(secs swfile)" "$(mibs swfile)" "$(( $(swf_total) - SWF_BEFORE ))" "$(rss_mib swfile)"
echo "seawall file-level full vs pgbackrest full: $(ratio "$(secs brfull)" "$(secs swfile)")x faster"

second() {
  local label=$1
  wait_archived
  local sw0 br0 swl0
  sw0=$(sw_total); br0=$(br_total)
  run "swphys-$label" $PGRUN $SW backup postgres --physical --dsn "$DSN"
  local swf0 swfd
  swf0=$(swf_total)
  run "swfile-$label" $PGRUN $SWF backup postgres --physical --file-level --dsn "$DSN"
  swfd=$(( $(swf_total) - swf0 ))
  run "brincr-$label" $PGRUN $PGBR --type=incr backup
  swl0=$(sw_total)
  run "swlog-$label" $PGRUN $SW backup postgres --dsn "$DB" --database bench --no-globals
  local swd brd swld
  swd=$(( swl0 - sw0 )); brd=$(( $(br_total) - br0 )); swld=$(( $(sw_total) - swl0 ))
  printf '%-34s %12s bytes added (%s s)\n' \
    "seawall physical (+WAL) after $label" "$swd" "$(secs "swphys-$label")" \
    "seawall file-level incr after $label" "$swfd" "$(secs "swfile-$label")" \
    "pgbackrest incr (+WAL) after $label" "$brd" "$(secs "brincr-$label")" \
    "seawall logical after $label" "$swld" "$(secs "swlog-$label")"
  echo "bytes added, seawall physical / pgbackrest incr after $label: $(ratio "$swd" "$brd")"
  echo "seawall file-level incr after $label: $(ratio "$(secs "brincr-$label")" "$(secs "swfile-$label")")x pgbackrest incr's speed, $(ratio "$swfd" "$brd") of its bytes"
}

echo "== (a) newest 1% of events updated"
psql "$DB" -c "UPDATE events SET status = 'archived', amount = amount + 1 WHERE id > (SELECT max(id) FROM events) * 99 / 100"
psql "$DSN" -c "CHECKPOINT" >/dev/null
second a

echo "== (b) 1% of pgbench_accounts updated, scattered (aid % 100 = 0)"
psql "$DB" -c "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 100 = 0"
psql "$DSN" -c "CHECKPOINT" >/dev/null
second b

echo "== wal-push per segment (32 segments into fresh archives, one call per segment as PostgreSQL makes)"
FAKE=$W/fake/pg_wal; mkdir -p "$FAKE/archive_status"; chown -R postgres "$W/fake"
SEGS=$(ls "$W/sw/wal/00000001" | grep -E '^[0-9A-F]{24}$' | tail -32 | tr '\n' ' ')
for s in $SEGS; do as_pg $SW wal-fetch "$s" "$FAKE/$s"; done
for s in $SEGS; do if [ -f "$FAKE/$s" ]; then touch "$FAKE/archive_status/$s.ready"; fi; done
chown -R postgres "$W/fake"
N=$(ls "$FAKE" | grep -cE '^[0-9A-F]{24}$')
as_pg $SEAWALL --repo "$W/sw2" --password-file "$W/password" init -q
SW2="$SEAWALL --repo $W/sw2 --password-file $W/password"
sed -e "s#repo1-path=$W/pgbr#repo1-path=$W/pgbr2#" "$W/pgbackrest.conf" > "$W/pgbackrest2.conf"; chown postgres "$W/pgbackrest2.conf"
as_pg pgbackrest --config="$W/pgbackrest2.conf" --stanza=bench stanza-create >/dev/null
# As PostgreSQL does, a file archived successfully goes from .ready to .done.
run pushsw bash -c "cd $W/fake && for s in $SEGS; do runuser -u postgres -- env SEAWALL_SPOOL=$W/spool2 $SW2 wal-push pg_wal/\$s || exit 1; mv pg_wal/archive_status/\$s.ready pg_wal/archive_status/\$s.done; done"
run pushbr bash -c "cd $W/fake && for s in $SEGS; do runuser -u postgres -- pgbackrest --config=$W/pgbackrest2.conf --stanza=bench archive-push $FAKE/\$s || exit 1; done"
echo "seawall wal-push: $(echo "scale=3; $(secs pushsw) * 1000 / $N" | bc -l) ms per segment; pgbackrest archive-push: $(echo "scale=3; $(secs pushbr) * 1000 / $N" | bc -l) ms per segment ($N segments)"

echo "== restore of the newest physical backup (no recovery run)"
mkdir -p "$W/restore/br"; chown -R postgres "$W/restore"; chmod 700 "$W/restore/br"
run swrestore $PGRUN $SW restore latest --pg-datadir "$W/restore/sw" --immediate
run brrestore $PGRUN $PGBR --pg1-path="$W/restore/br" --type=immediate restore
run swfrestore $PGRUN $SWF restore latest --pg-datadir "$W/restore/swf" --immediate
RBYTES=$(size "$W/restore/sw")
printf '%-34s %8s s %9s MiB/s %6s MiB RSS\n' \
  "seawall restore (manifest-checked)" "$(secs swrestore)" "$(echo "scale=1; $RBYTES / 1048576 / $(secs swrestore)" | bc -l)" "$(rss_mib swrestore)" \
  "pgbackrest restore" "$(secs brrestore)" "$(echo "scale=1; $RBYTES / 1048576 / $(secs brrestore)" | bc -l)" "$(rss_mib brrestore)" \
  "seawall restore (file-level)" "$(secs swfrestore)" "$(echo "scale=1; $RBYTES / 1048576 / $(secs swfrestore)" | bc -l)" "$(rss_mib swfrestore)"
echo "seawall restore vs pgbackrest restore: $(ratio "$(secs brrestore)" "$(secs swrestore)")x faster; file-level: $(ratio "$(secs brrestore)" "$(secs swfrestore)")x"

as_pg "$PGBIN/pg_ctl" -D "$W/pg/data" -m fast stop >/dev/null
echo "work directory: $W (remove it when done)"
