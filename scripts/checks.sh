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
  redis=$(cargo tree -p worldland-redis -e normal --prefix none | tail -n +2 | grep -Ei '^(worldland-|redis-bridge|registration-handler|join-token-issuer|heartbeat-recorder|staleness-sweeper|allocator|lapin|aws-|aws_|kube|lambda)' || true)
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

check_lints() {
  cargo fmt --all -- --check
  cargo clippy --workspace --all-targets -- -D warnings
  printf '[checks] fmt and clippy clean\n' >&2
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  cd "$(dirname "$0")/.."
  check_layering
  check_core_cycles
  check_lints
fi
