#!/usr/bin/env bash
# The whole test suite, on a fresh Debian 12 machine or a used one: installs
# what the tests need (scripts/setup.sh, idempotent), then runs every unit and
# end-to-end test. The end-to-end tests start their own servers on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
bash scripts/setup.sh
cargo nextest run --workspace --no-fail-fast "$@"
