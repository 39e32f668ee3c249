#!/bin/sh
# make bench / make bench-quick: the real-OpenSSH-fleet benchmark (issue 7, part 1).
#   bench/run.sh          full: N=50 hosts, 3 runs, with Ansible (creates bench/work/venv)
#   bench/run.sh --quick  CI: N=4 hosts, 1 run, no Ansible, no pip; only proves it runs
# Environment: BENCH_HOSTS, BENCH_RUNS, BENCH_CONCURRENCY (default = hosts), CARGO,
#              LUUMEN_AGENT_BIN (default: target/release/luumen-agent, built here).
# Needs root (the harness creates test users and starts sshd). Exits 0 unless setup fails.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
cd "$root"
CARGO=${CARGO:-cargo}
quick=0
[ "${1:-}" = --quick ] && quick=1

if [ "$(id -u)" != 0 ]; then
    echo "bench: must run as root (test users, sshd on loopback addresses)" >&2
    exit 1
fi
if [ "$quick" = 1 ]; then
    hosts=${BENCH_HOSTS:-4}; runs=${BENCH_RUNS:-1}
    results="$here/work/results-quick.md"
else
    hosts=${BENCH_HOSTS:-50}; runs=${BENCH_RUNS:-3}
    results="$here/results.md"
fi
conc=${BENCH_CONCURRENCY:-$hosts}

mkdir -p "$here/work"
if [ -z "${LUUMEN_AGENT_BIN:-}" ]; then
    $CARGO build --release -p luumen-agent
    target=${CARGO_TARGET_DIR:-$root/target}
    case $target in /*) ;; *) target="$root/$target" ;; esac
    LUUMEN_AGENT_BIN="$target/release/luumen-agent"
fi
export LUUMEN_AGENT_BIN

set -- --hosts "$hosts" --runs "$runs" --concurrency "$conc" --work "$here/work" --results "$results"
if [ "$quick" = 1 ]; then
    set -- "$@" --no-warmup
else
    ansible_bin=$(sh "$here/setup-ansible.sh")
    set -- "$@" --ansible-bin "$ansible_bin"
fi
$CARGO run --release --quiet -p luumen-integration --example fleet_bench -- "$@"
