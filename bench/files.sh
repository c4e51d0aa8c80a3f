#!/usr/bin/env bash
# Files benchmark: Seawall against restic (Debian's package), both to local
# repositories, on the same generated dataset in the same run.
#
#   bench/files.sh [--dump-mib N] [--small-files N] [--work DIR] [--no-double]
#
# Prints backup and restore throughput, bytes added by a second backup after
# 1% of the data changed, peak RSS, and the ratios. Then both back up
# incompressible inputs (peak RSS without compression hiding the buffers),
# and Seawall alone a dataset twice as large, to show that peak RSS stays
# flat.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

DUMP_MIB=1800
SMALL=25000
WORK=${TMPDIR:-/tmp}/seawall-bench
DOUBLE=1
while [ $# -gt 0 ]; do
  case "$1" in
    --dump-mib) DUMP_MIB=$2; shift 2 ;;
    --small-files) SMALL=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --no-double) DOUBLE=0; shift ;;
    *) echo "unknown option $1" >&2; exit 64 ;;
  esac
done

command -v restic >/dev/null || { echo "restic missing: run scripts/setup.sh" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "/usr/bin/time missing: run scripts/setup.sh" >&2; exit 1; }
cargo build --release --quiet
SEAWALL=$PWD/target/release/seawall

rm -rf "$WORK"; mkdir -p "$WORK"
DATA=$WORK/data
export SEAWALL_PASSWORD=bench-password RESTIC_PASSWORD=bench-password

echo "generating dataset: ${DUMP_MIB} MiB dump-like file + ${SMALL} small files ..."
"$SEAWALL" bench-data "$DATA" --dump-mib "$DUMP_MIB" --small-files "$SMALL"
BYTES=$(du -sb "$DATA" | cut -f1)
FILES=$(find "$DATA" -type f | wc -l)
echo "dataset: $BYTES bytes in $FILES files"

# run NAME CMD... : times a command, records seconds and peak RSS (KiB)
run() {
  local name=$1; shift
  local start end
  sync
  start=$(date +%s.%N)
  /usr/bin/time -f '%M' -o "$WORK/$name.rss" "$@" >"$WORK/$name.log" 2>&1 || { echo "$name failed:"; tail -20 "$WORK/$name.log"; exit 1; }
  end=$(date +%s.%N)
  # Flush outside the timing, so one step's writeback does not slow the next.
  sync
  echo "$end - $start" | bc -l > "$WORK/$name.secs"
}
secs() { cat "$WORK/$1.secs"; }
rss_mib() { echo "$(tail -1 "$WORK/$1.rss") / 1024" | bc; }
mibs() { echo "scale=1; $BYTES / 1048576 / $(secs "$1")" | bc -l; }
reposize() { du -sb "$1" | cut -f1; }

sync
"$SEAWALL" init --repo "$WORK/seawall-repo" --quiet
restic init --repo "$WORK/restic-repo" --quiet

run restic-backup restic --repo "$WORK/restic-repo" backup --quiet "$DATA"
run seawall-backup "$SEAWALL" --repo "$WORK/seawall-repo" --quiet backup files "$DATA"
S_FIRST=$(reposize "$WORK/seawall-repo"); R_FIRST=$(reposize "$WORK/restic-repo")

# Restores are measured three times each, in the order restic, seawall,
# seawall, restic, restic, seawall, and the median of each counts, so
# neither tool always follows the other. Each restores into a directory of
# its own, and all six are removed only at the end: creating files right
# after a large rm -rf is slow for a while and by how much varies (here a
# discard mount keeps trimming, and ext4 without a journal passes over
# inodes freed in the last minute), which measured the file system's
# recovery instead of the restore. Before each, the page cache is dropped
# (as root) and the disk given a moment, so every restore reads the
# repository from disk.
FREE=$(df -B1 --output=avail "$WORK" | tail -1)
if [ "$FREE" -lt $((7 * BYTES)) ]; then
  echo "the six restores need $((7 * BYTES / 1048576)) MiB free under $WORK, there are $((FREE / 1048576)): use --work or a smaller --dump-mib" >&2
  exit 1
fi
settle() {
  sync
  if [ -w /proc/sys/vm/drop_caches ]; then echo 3 > /proc/sys/vm/drop_caches; fi
  sleep 2
}
restore_restic() {
  settle
  run "restic-restore$1" restic --repo "$WORK/restic-repo" restore latest --target "$WORK/restored-restic$1"
}
restore_seawall() {
  settle
  run "seawall-restore$1" "$SEAWALL" --repo "$WORK/seawall-repo" --quiet restore latest --to "$WORK/restored-seawall$1"
  diff -r --no-dereference "$DATA" "$WORK/restored-seawall$1$DATA" >/dev/null || { echo "seawall restore differs from the source" >&2; exit 1; }
}
median() { # median NAME: keeps the middle of NAME-a, -b, -c as NAME
  k=$(for x in a b c; do echo "$(secs "$1-$x") $x"; done | sort -n | sed -n 2p | cut -d' ' -f2)
  cp "$WORK/$1-$k.secs" "$WORK/$1.secs"
  sort -n "$WORK/$1-a.rss" "$WORK/$1-b.rss" "$WORK/$1-c.rss" | tail -1 > "$WORK/$1.rss"
}
restore_restic -a; restore_seawall -a; restore_seawall -b; restore_restic -b; restore_restic -c; restore_seawall -c
rm -rf "$WORK"/restored-*
median restic-restore; median seawall-restore
echo "restore seconds: restic $(secs restic-restore-a) $(secs restic-restore-b) $(secs restic-restore-c), seawall $(secs seawall-restore-a) $(secs seawall-restore-b) $(secs seawall-restore-c)"

echo "changing 1% of the data ..."
"$SEAWALL" bench-data "$DATA" --mutate 1
run restic-backup2 restic --repo "$WORK/restic-repo" backup --quiet "$DATA"
run seawall-backup2 "$SEAWALL" --repo "$WORK/seawall-repo" --quiet backup files "$DATA"
S_ADDED=$(( $(reposize "$WORK/seawall-repo") - S_FIRST )); R_ADDED=$(( $(reposize "$WORK/restic-repo") - R_FIRST ))

ratio() { echo "scale=2; $1 / $2" | bc -l; }
printf '\n%-34s %14s %14s %8s\n' "figure" "seawall" "restic" "ratio"
printf '%-34s %14s %14s %8s\n' "backup throughput (MiB/s)" "$(mibs seawall-backup)" "$(mibs restic-backup)" "$(ratio "$(mibs seawall-backup)" "$(mibs restic-backup)")"
printf '%-34s %14s %14s %8s\n' "restore throughput (MiB/s)" "$(mibs seawall-restore)" "$(mibs restic-restore)" "$(ratio "$(mibs seawall-restore)" "$(mibs restic-restore)")"
printf '%-34s %14s %14s %8s\n' "repository after first backup (B)" "$S_FIRST" "$R_FIRST" "$(ratio "$S_FIRST" "$R_FIRST")"
printf '%-34s %14s %14s %8s\n' "bytes added after 1% change" "$S_ADDED" "$R_ADDED" "$(ratio "$S_ADDED" "$R_ADDED")"
printf '%-34s %14s %14s %8s\n' "  as % of first backup" "$(echo "scale=2; 100*$S_ADDED/$S_FIRST" | bc -l)" "$(echo "scale=2; 100*$R_ADDED/$R_FIRST" | bc -l)" ""
printf '%-34s %14s %14s %8s\n' "second backup time (s)" "$(secs seawall-backup2)" "$(secs restic-backup2)" "$(ratio "$(secs restic-backup2)" "$(secs seawall-backup2)")"
printf '%-34s %14s %14s %8s\n' "peak RSS backup (MiB)" "$(rss_mib seawall-backup)" "$(rss_mib restic-backup)" "$(ratio "$(rss_mib seawall-backup)" "$(rss_mib restic-backup)")"
printf '%-34s %14s %14s %8s\n' "peak RSS restore (MiB)" "$(rss_mib seawall-restore)" "$(rss_mib restic-restore)" "$(ratio "$(rss_mib seawall-restore)" "$(rss_mib restic-restore)")"
echo "(throughput ratios: seawall/restic, higher is better; bytes and RSS: seawall/restic, lower is better)"

# Incompressible inputs, where no compression hides the pack and chunk
# buffers: one 2 GiB file of random bytes, and two 1 GiB files read in
# parallel. Fresh repositories each, both tools, peak RSS compared.
echo
echo "incompressible inputs: one 2 GiB random file; two 1 GiB random files ..."
rm -rf "$DATA" "$WORK"/*-repo "$WORK"/*-restore*
mkdir -p "$WORK/rand1" "$WORK/rand2"
head -c 2G /dev/urandom > "$WORK/rand1/random.bin"
head -c 1G /dev/urandom > "$WORK/rand2/a.bin"
head -c 1G /dev/urandom > "$WORK/rand2/b.bin"
for set in rand1 rand2; do
  rm -rf "$WORK/seawall-$set" "$WORK/restic-$set"
  "$SEAWALL" init --repo "$WORK/seawall-$set" --quiet
  restic init --repo "$WORK/restic-$set" >/dev/null
  BYTES=$(du -sb "$WORK/$set" | cut -f1)
  run "seawall-$set" "$SEAWALL" --repo "$WORK/seawall-$set" --quiet backup files "$WORK/$set"
  run "restic-$set" restic --repo "$WORK/restic-$set" backup --quiet "$WORK/$set"
  printf '%-34s %14s %14s %8s\n' "$set: backup MiB/s" "$(mibs "seawall-$set")" "$(mibs "restic-$set")" "$(ratio "$(mibs "seawall-$set")" "$(mibs "restic-$set")")"
  printf '%-34s %14s %14s %8s\n' "$set: peak RSS backup (MiB)" "$(rss_mib "seawall-$set")" "$(rss_mib "restic-$set")" "$(ratio "$(rss_mib "seawall-$set")" "$(rss_mib "restic-$set")")"
  rm -rf "$WORK/seawall-$set" "$WORK/restic-$set" "$WORK/$set"
done

if [ "$DOUBLE" = 1 ]; then
  echo
  echo "doubling the dataset to check that Seawall's memory stays flat ..."
  rm -rf "$WORK/restic-repo"
  "$SEAWALL" bench-data "$WORK/data2" --dump-mib $((DUMP_MIB * 2)) --small-files $((SMALL * 2))
  "$SEAWALL" init --repo "$WORK/seawall-repo2" --quiet
  BYTES=$(du -sb "$WORK/data2" | cut -f1)
  run seawall-backup-double "$SEAWALL" --repo "$WORK/seawall-repo2" --quiet backup files "$WORK/data2"
  printf '%-34s %14s\n' "dataset x2: bytes" "$BYTES"
  printf '%-34s %14s\n' "dataset x2: backup MiB/s" "$(mibs seawall-backup-double)"
  printf '%-34s %14s (x1: %s)\n' "dataset x2: peak RSS (MiB)" "$(rss_mib seawall-backup-double)" "$(rss_mib seawall-backup)"
fi
rm -rf "$WORK"
