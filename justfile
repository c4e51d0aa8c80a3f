# Recipes a person runs. `just --list` shows them.

# Install everything the tests and benchmarks need (idempotent).
setup:
    bash scripts/setup.sh

# Run every test (installs what they need first).
test *ARGS:
    bash scripts/test.sh {{ARGS}}

# Show Seawall on a generated sample: init, backup, change, backup, verify, restore.
demo:
    cargo run --release -- demo

# Benchmarks against restic on a generated 2+ GiB dataset.
bench *ARGS:
    bash bench/files.sh {{ARGS}}

# PostgreSQL benchmark against pgBackRest and pg_dump pipelines (run as root).
bench-postgres *ARGS:
    bash bench/postgres.sh {{ARGS}}

# Redis benchmark against the runbook's BGSAVE + gzip and redis-cli --rdb | zstd.
bench-redis *ARGS:
    bash bench/redis.sh {{ARGS}}

# Format, lint, test: what every commit passes.
check:
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings
    bash scripts/test.sh

# Coordinator load (1,000 simulated agents) and leader takeover time.
bench-fleet *ARGS:
    bash bench/fleet.sh {{ARGS}}
