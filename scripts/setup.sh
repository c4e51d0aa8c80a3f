#!/usr/bin/env bash
# Installs everything Seawall's tests and benchmarks need on a fresh Debian 12
# machine. Idempotent: each step is skipped when what it installs is present.
set -euo pipefail

log() { printf 'setup: %s\n' "$*" >&2; }

need_apt=()
command -v restic >/dev/null        || need_apt+=(restic)
command -v zstd >/dev/null          || need_apt+=(zstd)
command -v protoc >/dev/null        || need_apt+=(protobuf-compiler)
# etcd-client compiles protos that import the well-known types.
[ -f /usr/include/google/protobuf/descriptor.proto ] || need_apt+=(libprotobuf-dev)
command -v redis-server >/dev/null  || need_apt+=(redis-server)
command -v etcd >/dev/null          || need_apt+=(etcd-server)
command -v etcdctl >/dev/null       || need_apt+=(etcd-client)
command -v pgbackrest >/dev/null    || need_apt+=(pgbackrest)
command -v /usr/bin/time >/dev/null || need_apt+=(time)
command -v bc >/dev/null           || need_apt+=(bc)
[ -x /usr/lib/postgresql/15/bin/initdb ] || need_apt+=(postgresql-15)
command -v promtool >/dev/null      || need_apt+=(prometheus)
# Network namespaces: the failover tests cut a region off.
command -v ip >/dev/null            || need_apt+=(iproute2)
# The files round-trip test reads extended attributes, ACLs and file
# capabilities with the tools users compare them with.
command -v getfattr >/dev/null      || need_apt+=(attr)
command -v getfacl >/dev/null       || need_apt+=(acl)
command -v setcap >/dev/null        || need_apt+=(libcap2-bin)
# Headless rendering of the report and status pages.
command -v chromium >/dev/null      || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # Debian starts packaged daemons on install; the tests start their own.
  for svc in redis-server etcd postgresql prometheus prometheus-node-exporter; do
    (systemctl stop "$svc" || service "$svc" stop) >/dev/null 2>&1 || true
  done
fi

export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v s3s-fs >/dev/null; then
  log "cargo install s3s-fs (real S3 server on a folder)"
  cargo install s3s-fs@0.14.1 --locked --features binary
fi
if ! command -v just >/dev/null; then
  log "cargo install just"
  cargo install just --locked
fi
if ! command -v cargo-nextest >/dev/null; then
  log "cargo install cargo-nextest"
  cargo install cargo-nextest --locked
fi
if ! python3 -c 'import moto.server' >/dev/null 2>&1; then
  log "pip install moto[server]"
  python3 -m pip install --quiet 'moto[server]'
fi
# The deployment test reads the Kubernetes manifests with PyYAML (moto's
# server extra brings it; checked on its own all the same).
if ! python3 -c 'import yaml' >/dev/null 2>&1; then
  log "pip install pyyaml"
  python3 -m pip install --quiet pyyaml
fi
log "all test dependencies present"
