#!/bin/sh
# Creates bench/work/venv with ansible-core from PyPI (idempotent). Prints the venv's bin dir.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
venv="$here/work/venv"
if [ ! -x "$venv/bin/ansible" ]; then
    mkdir -p "$here/work"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${ANSIBLE_CORE_SPEC:-ansible-core}" >&2
fi
echo "$venv/bin"
