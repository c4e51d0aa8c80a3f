#!/usr/bin/env bash
# The whole test suite, on a fresh Debian 12 machine or a used one: installs
# what the tests need (scripts/setup.sh, idempotent), then runs every unit and
# end-to-end test. The end-to-end tests start their own servers on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
bash scripts/setup.sh

# A clean build takes about 3 GiB and the tests write up to 2 GiB at once
# under $TMPDIR; a full disk shows up as many unrelated failures, so say it
# once, first.
need_gib=6
for dir in "${CARGO_TARGET_DIR:-target}" "${TMPDIR:-/tmp}"; do
  mkdir -p "$dir"
  free_kib=$(df -Pk "$dir" | awk 'NR==2 {print $4}')
  if [ "$free_kib" -lt $((need_gib * 1024 * 1024)) ]; then
    echo "test: only $((free_kib / 1024 / 1024)) GiB free under $dir; the build and tests need ${need_gib} GiB: free space (cargo clean in old clones) and run again" >&2
    exit 1
  fi
done
cargo nextest run --workspace --no-fail-fast "$@"
