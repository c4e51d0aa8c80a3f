#!/usr/bin/env bash
# Mirror benchmark: `seawall mirror` against a plain copy of the same
# repository objects, in the same run: `cp -r` then `sync` between two local
# directories (Seawall's local writes are durable, fsync'd, so the plain copy
# is timed until its data is on disk too), and `aws s3 cp --recursive` (the
# AWS CLI) from a local directory into an S3 server (s3s-fs on loopback).
#
#   bench/mirror.sh [--dump-mib N] [--small-files N] [--work DIR]
#
# Prints throughput of each and the ratio (Seawall / plain copy). Seawall
# also checks every content-addressed object against its name on the way.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

DUMP_MIB=1024
SMALL=5000
WORK=${TMPDIR:-/tmp}/seawall-bench-mirror
while [ $# -gt 0 ]; do
  case "$1" in
    --dump-mib) DUMP_MIB=$2; shift 2 ;;
    --small-files) SMALL=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 64 ;;
  esac
done

for tool in aws s3s-fs bc; do
  command -v "$tool" >/dev/null || { echo "$tool missing: run scripts/setup.sh" >&2; exit 1; }
done
cargo build --release --quiet
SEAWALL=$PWD/target/release/seawall

rm -rf "$WORK"; mkdir -p "$WORK"
export SEAWALL_PASSWORD=bench-password
echo "generating a repository from ${DUMP_MIB} MiB dump-like file + ${SMALL} small files ..."
"$SEAWALL" bench-data "$WORK/data" --dump-mib "$DUMP_MIB" --small-files "$SMALL"
SRC=$WORK/repo
"$SEAWALL" -q -r "$SRC" init
"$SEAWALL" -q -r "$SRC" backup files "$WORK/data"
rm -rf "$WORK/data"
BYTES=$(du -sb "$SRC" | cut -f1)
OBJECTS=$(find "$SRC" -type f | wc -l)
echo "repository: $BYTES bytes in $OBJECTS objects"

# run NAME CMD... : times a command after a sync and a dropped page cache.
run() {
  local name=$1; shift
  sync
  [ -w /proc/sys/vm/drop_caches ] && echo 3 > /proc/sys/vm/drop_caches || true
  local start end
  start=$(date +%s.%N)
  "$@" >"$WORK/$name.log" 2>&1 || { echo "$name failed:"; tail -20 "$WORK/$name.log"; exit 1; }
  end=$(date +%s.%N)
  sync
  echo "$end - $start" | bc -l > "$WORK/$name.secs"
}
secs() { cat "$WORK/$1.secs"; }
mibs() { echo "scale=1; $BYTES / 1048576 / $(secs "$1")" | bc -l; }
ratio() { echo "scale=2; $(secs "$2") / $(secs "$1")" | bc -l; }

# Local to local, each twice (alternating), the faster of each counts.
for i in 1 2; do
  rm -rf "$WORK/cp-$i" "$WORK/mirror-$i"
  run "cp-$i" sh -c 'cp -r "$1" "$2" && sync' _ "$SRC" "$WORK/cp-$i"
  run "mirror-$i" "$SEAWALL" -q -r "$SRC" mirror --to "$WORK/mirror-$i"
done
best() { if (( $(echo "$(secs "$1-1") < $(secs "$1-2")" | bc -l) )); then echo "$1-1"; else echo "$1-2"; fi; }
CP=$(best cp); MIRROR=$(best mirror)
"$SEAWALL" -q -r "$WORK/$MIRROR" verify >/dev/null

# Local to S3.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$WORK/s3"
s3s-fs --host 127.0.0.1 --port "$PORT" --access-key bench --secret-key benchsecret "$WORK/s3" >"$WORK/s3s.log" 2>&1 &
S3PID=$!
trap 'kill $S3PID 2>/dev/null || true' EXIT
until (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null; do sleep 0.1; done
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=benchsecret AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
ENDPOINT=http://127.0.0.1:$PORT
aws --endpoint-url "$ENDPOINT" s3 mb s3://plain >/dev/null
aws --endpoint-url "$ENDPOINT" s3 mb s3://mirror >/dev/null
run s3-cp aws --endpoint-url "$ENDPOINT" s3 cp --recursive --only-show-errors "$SRC" s3://plain/repo
run s3-mirror env SEAWALL_S3_ENDPOINT="$ENDPOINT" SEAWALL_S3_PATH_STYLE=true \
  "$SEAWALL" -q -r "$SRC" mirror --to s3://mirror/repo

printf '\n%-34s %10s %10s %8s\n' "step" "plain" "seawall" "ratio"
printf '%-34s %8s/s %8s/s %8s\n' "local to local (cp -r; sync)" "$(mibs "$CP") MiB" "$(mibs "$MIRROR") MiB" "$(ratio "$MIRROR" "$CP")x"
printf '%-34s %8s/s %8s/s %8s\n' "local to S3 (aws s3 cp)" "$(mibs s3-cp) MiB" "$(mibs s3-mirror) MiB" "$(ratio s3-mirror s3-cp)x"
echo "(ratio = plain copy time / seawall time; above 1 means seawall is faster)"
