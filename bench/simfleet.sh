#!/bin/sh
# make bench / make bench-quick, part 2 (issue 7): luumen-agent against a simulated SSH fleet.
#   bench/simfleet.sh          full: N = 500,1000,2000,5000 at RTT 0 and 50 ms, C = 256, 3 runs
#                              (1 for N = 5000); appends its tables to bench/results.md
#   bench/simfleet.sh --quick  CI: N = 50, RTT 0, 1 run; writes bench/work/results-simfleet-quick.md
# Environment: SIMFLEET_SIZES, SIMFLEET_RTTS, SIMFLEET_RUNS, BENCH_CONCURRENCY_SIM (default 256),
#              SIMFLEET_HOST_KEY_POLICY (accept-new, the default, or off), CARGO,
#              LUUMEN_AGENT_BIN (default: target/release/luumen-agent, built here).
# Needs root (its own network namespace: iproute2's `ip`), ssh-keygen. Exits 0 unless setup fails.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
cd "$root"
CARGO=${CARGO:-cargo}
quick=0
[ "${1:-}" = --quick ] && quick=1

if [ "$(id -u)" != 0 ]; then
    echo "simfleet bench: must run as root (network namespace)" >&2
    exit 1
fi
# `ip` (network namespace) and `ssh-keygen` (the fleet's keys): install them on a fresh machine.
if ! command -v ip >/dev/null 2>&1 || ! command -v ssh-keygen >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y iproute2 openssh-client >/dev/null ||
        { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y iproute2 openssh-client >/dev/null; }
fi
target=${CARGO_TARGET_DIR:-$root/target}
case $target in /*) ;; *) target="$root/$target" ;; esac
if [ -z "${LUUMEN_AGENT_BIN:-}" ]; then
    $CARGO build --release -p luumen-agent -p luumen-simfleet
    LUUMEN_AGENT_BIN="$target/release/luumen-agent"
else
    $CARGO build --release -p luumen-simfleet
fi

mkdir -p "$here/work/simfleet"
if [ "$quick" = 1 ]; then
    set -- --sizes "${SIMFLEET_SIZES:-50}" --rtts "${SIMFLEET_RTTS:-0}" --runs "${SIMFLEET_RUNS:-1}" \
        --t1-runs 1 --no-warmup --results "$here/work/results-simfleet-quick.md"
    rm -f "$here/work/results-simfleet-quick.md"
else
    set -- --sizes "${SIMFLEET_SIZES:-500,1000,2000,5000}" --rtts "${SIMFLEET_RTTS:-0,50}" \
        --runs "${SIMFLEET_RUNS:-3}" --results "$here/results.md"
fi
exec "$target/release/simfleet-bench" "$@" \
    --concurrency "${BENCH_CONCURRENCY_SIM:-256}" --host-key-policy "${SIMFLEET_HOST_KEY_POLICY:-accept-new}" \
    --agent "$LUUMEN_AGENT_BIN" --simfleet "$target/release/luumen-simfleet" \
    --script "$root/properties/src/plan/linux.sh" --work "$here/work/simfleet"
