#!/usr/bin/env bash
# `make run`: the whole system on this machine. Starts luumen-api on loopback with a fresh data
# dir, registers this machine as a host (local protocol), runs one agent cycle against the API,
# and prints what the API now holds for the host. Everything is stopped and removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
API=${LUUMEN_API_BIN:-target/debug/luumen-api}
AGENT=${LUUMEN_AGENT_BIN:-target/debug/luumen-agent}

work=$(mktemp -d /tmp/luumen-run.XXXXXX)
api_pid=
cleanup() {
    if [ -n "$api_pid" ]; then kill "$api_pid" 2>/dev/null || true; wait "$api_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

keys=$("$API" init --data-dir "$work/api")
admin_key=$(printf '%s\n' "$keys" | sed -n 's/^admin_key=//p')
agent_key=$(printf '%s\n' "$keys" | sed -n 's/^agent_key=//p')

"$API" serve --data-dir "$work/api" --listen 127.0.0.1:0 2>"$work/api.log" &
api_pid=$!
base_url=
for _ in $(seq 1 100); do
    base_url=$(sed -n 's/.*"base_url":"\([^"]*\)".*/\1/p' "$work/api.log" | head -n1)
    [ -n "$base_url" ] && break
    kill -0 "$api_pid" 2>/dev/null || { cat "$work/api.log" >&2; exit 1; }
    sleep 0.1
done
[ -n "$base_url" ] || { echo "run-local: luumen-api did not start" >&2; cat "$work/api.log" >&2; exit 1; }
echo "== luumen-api listening at $base_url (data dir $work/api)"

api() { curl -sS --fail-with-body -H "api-key: $admin_key" -H 'content-type: application/json' "$@"; }
api -X POST "$base_url/hosts" -d '{"id": "patch-server", "protocol": "local", "groups": ["patch"]}' >/dev/null
echo "== registered host patch-server (local protocol)"

cat >"$work/config.yaml" <<YAML
api: { base_url: '$base_url', api_key: '$agent_key' }
state_dir: '$work/agent-state'
YAML
echo "== luumen-agent once"
"$AGENT" once --config "$work/config.yaml" 2>"$work/agent.log" || { cat "$work/agent.log" >&2; exit 1; }
tail -n1 "$work/agent.log"

echo "== GET $base_url/hosts/patch-server"
if command -v jq >/dev/null 2>&1; then
    api "$base_url/hosts/patch-server" | jq '{id, status, last_seen, stale, last_error, os: .properties.os, hardware: .properties.hardware, selinux: .properties.selinux, tuned: .properties.tuned, services: (.properties.services | length?), cron: .properties.cron}'
else
    api "$base_url/hosts/patch-server"; echo
fi
echo "== GET $base_url/software?name=openssl"
api "$base_url/software?name=openssl"; echo
