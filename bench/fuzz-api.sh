#!/usr/bin/env bash
# Fuzzes a fresh luumen-api against its own OpenAPI document with schemathesis (from PyPI, in a
# virtualenv under bench/work). Loopback only; the server is stopped by PID at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q -p luumen-api
venv=bench/work/venv-api
[ -x "$venv/bin/schemathesis" ] || { python3 -m venv "$venv"; "$venv/bin/pip" install -q schemathesis; }
work=$(mktemp -d /tmp/luumen-fuzz.XXXXXX)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT
keys=$(target/debug/luumen-api init --data-dir "$work/api" 2>/dev/null)
admin_key=$(printf '%s\n' "$keys" | sed -n 's/^admin_key=//p')
target/debug/luumen-api serve --data-dir "$work/api" --listen 127.0.0.1:0 2>"$work/api.log" &
pid=$!
base=
for _ in $(seq 1 100); do
    base=$(sed -n 's/.*"base_url":"\([^"]*\)".*/\1/p' "$work/api.log" | head -n1)
    [ -n "$base" ] && break
    sleep 0.1
done
root=${base%/api/v1}
"$venv/bin/schemathesis" run "$root/openapi.json" --url "$root" \
    -H "api-key: $admin_key" --max-examples "${FUZZ_EXAMPLES:-30}" --checks all "$@"
