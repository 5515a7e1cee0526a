#!/usr/bin/env bash
# Static checks of the layering and the code, sourced by scripts/test (and runnable alone:
# `bash scripts/checks.sh`).
set -euo pipefail

# The dependency arrows: core has no IO crate in its tree; the SDK (on GPU owners' machines)
# has no broker-side crate (lapin, the AWS SDK, kube, the Lambda runtime).
check_layering() {
  local core sdk redis
  core=$(cargo tree -p worldland-core -e normal --prefix none | grep -Ei '^(tokio|redis|lapin|aws-|aws_|kube|lambda)' || true)
  if [ -n "$core" ]; then
    printf 'worldland-core must not depend on IO crates, but its tree has:\n%s\n' "$core" >&2
    return 1
  fi
  sdk=$(cargo tree -p worldland-provider-sdk -e normal --prefix none | grep -Ei '^(lapin|aws-|aws_|kube|lambda)' || true)
  if [ -n "$sdk" ]; then
    printf 'the provider SDK must not depend on broker-side crates, but its tree has:\n%s\n' "$sdk" >&2
    return 1
  fi
  # The SDK and the broker share worldland-redis: it must pull in neither another workspace crate
  # nor a broker-side one. (The first line of its tree is the crate itself.)
  redis=$(cargo tree -p worldland-redis -e normal --prefix none | tail -n +2 | grep -Ei '^(worldland-|redis-bridge|registration-handler|join-token-issuer|heartbeat-recorder|staleness-sweeper|csr-approver|allocator|lapin|aws-|aws_|kube|lambda)' || true)
  if [ -n "$redis" ]; then
    printf 'worldland-redis must depend on no workspace crate and no broker-side crate, but its tree has:\n%s\n' "$redis" >&2
    return 1
  fi
  printf '[checks] layering: core has no IO crate; the SDK and worldland-redis have no broker-side crate\n' >&2
}

# No import cycle between core's modules: one concept a module, and the arrows go one way.
check_core_cycles() {
  python3 scripts/module_cycles.py shared/core/src
}

# Each worker links only the backends it calls (its crate enables only those features of
# worldland-runtime): worker → crates that must not be in its normal dependency tree.
WORKER_FORBIDS=(
  "allocator: kube k8s-openapi"
  "registration-handler: kube k8s-openapi"
  "heartbeat-recorder: redis"
  "csr-approver: redis"
  "redis-bridge: kube k8s-openapi aws-sdk-dynamodb lambda_runtime aws_lambda_events"
)

check_worker_links() {
  local entry worker forbidden tree crate found=""
  for entry in "${WORKER_FORBIDS[@]}"; do
    worker=${entry%%:*}
    forbidden=${entry#*: }
    tree=$(cargo tree -p "$worker" -e normal --prefix none)
    for crate in $forbidden; do
      if grep -q "^$crate v" <<<"$tree"; then
        found+="  $worker links $crate"$'\n'
      fi
    done
  done
  if [ -n "$found" ]; then
    printf 'workers link backends they do not call:\n%s' "$found" >&2
    return 1
  fi
  printf '[checks] worker links: each worker links only the backends it calls\n' >&2
}

# Each worker builds on its own, with only its own features: a workspace build unifies features
# and would hide a backend's code that a worker's feature set leaves out (its container and
# Lambda images are built one package at a time).
check_workers_build_alone() {
  local dir
  for dir in functions/*/; do
    cargo check -q -p "$(basename "$dir")" --bins --lib
  done
  printf '[checks] every worker builds alone with its own features\n' >&2
}

# No declared dependency goes unused (cargo-machete; installed on first use, as on a fresh CI
# runner).
check_unused_deps() {
  if ! command -v cargo-machete >/dev/null 2>&1; then
    printf '[checks] installing cargo-machete\n' >&2
    cargo install --locked cargo-machete
  fi
  cargo machete
  printf '[checks] unused dependencies: none\n' >&2
}

check_lints() {
  cargo fmt --all -- --check
  cargo clippy --workspace --all-targets -- -D warnings
  printf '[checks] fmt and clippy clean\n' >&2
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  cd "$(dirname "$0")/.."
  check_layering
  check_core_cycles
  check_worker_links
  check_workers_build_alone
  check_unused_deps
  check_lints
fi
