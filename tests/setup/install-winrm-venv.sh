#!/usr/bin/env bash
# Creates the Python virtualenv the WinRM test server (tests/winrm/server.py) and the pywinrm
# cross-check (tests/winrm/pywinrm_check.py) run from: pyspnego (server-side NTLM and WinRM message
# encryption), cryptography (the test CA and server certificate) and pywinrm (an independent
# client). Idempotent: does nothing when the venv already imports the pinned versions. Prints the
# path of the venv's python on its last line.
#
#   LUUMEN_WINRM_VENV  where the virtualenv goes (default /opt/luumen-test/winrm-venv)
#
# The tests find the interpreter through LUUMEN_WINRM_PYTHON, then this script.
set -euo pipefail

venv="${LUUMEN_WINRM_VENV:-/opt/luumen-test/winrm-venv}"
requirements=(
    "pywinrm==0.5.0"
    "pyspnego==0.12.4"
    "requests-ntlm==1.3.0"
    "cryptography==50.0.2"
)

check() {
    "$venv/bin/python" - <<'PY' >/dev/null 2>&1
from importlib.metadata import version
import winrm, spnego, cryptography  # noqa: F401
assert version("pywinrm") == "0.5.0"
assert version("pyspnego") == "0.12.4"
PY
}

if [ -x "$venv/bin/python" ] && check; then
    echo "install-winrm-venv: $venv already set up" >&2
    echo "$venv/bin/python"
    exit 0
fi

if ! python3 -m venv --help >/dev/null 2>&1; then
    echo "install-winrm-venv: python3 with the venv module is required (apt-get install python3-venv)" >&2
    exit 1
fi

started=$(date +%s)
mkdir -p "$(dirname "$venv")"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${requirements[@]}"

if ! check; then
    echo "install-winrm-venv: packages installed but $venv cannot import them" >&2
    exit 1
fi
echo "install-winrm-venv: installed ${requirements[*]} in $(( $(date +%s) - started )) s" >&2
echo "$venv/bin/python"
