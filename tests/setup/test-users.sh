#!/bin/sh
# Creates the system users, sudo rules and root crontab that the luumen-agent
# integration tests log in with.  Idempotent: safe to run any number of times,
# also concurrently (it takes a lock).  Must run as root, on a test machine only.
#
# Users (home under /var/lib/luumen-test/home/<user>, shell /bin/sh):
#   luumen-key     key auth only,      sudo NOPASSWD for the collector commands
#   luumen-sudo    key auth only,      sudo NOPASSWD for the collector commands
#   luumen-pass    password auth,      sudo NOPASSWD for the collector commands
#   luumen-nosudo  key auth only,      no sudo rights at all
# Key-only users get the password hash '*' (no password can match, but the
# account is not "locked", which sshd without PAM would refuse even for keys).
# Authorized keys are NOT installed here: each sshd harness points
# AuthorizedKeysFile into its own temp dir.
#
# Environment:
#   LUUMEN_TEST_PASSWORD  password of luumen-pass (default below; the Rust
#                         harness uses the same default)
set -eu

if [ "$(id -u)" != 0 ]; then
    echo "test-users.sh: must run as root" >&2
    exit 1
fi

PASSWORD="${LUUMEN_TEST_PASSWORD:-Luumen-test-pass-1}"
BASE=/var/lib/luumen-test
HOME_BASE="$BASE/home"
SUDOERS=/etc/sudoers.d/luumen-test
CRONTAB_DIR=/var/spool/cron/crontabs
LOCK=/run/luumen-test-users.lock

mkdir -p "$HOME_BASE"
chmod 0755 "$BASE" "$HOME_BASE"

# Serialise concurrent runs (parallel test processes).
exec 9>"$LOCK"
flock -w 120 9

ensure_user() {
    u="$1"
    if ! getent passwd "$u" >/dev/null 2>&1; then
        useradd --create-home --home-dir "$HOME_BASE/$u" --shell /bin/sh \
            --user-group --comment "luumen-agent integration test user" "$u"
    else
        if [ "$(getent passwd "$u" | cut -d: -f7)" != /bin/sh ]; then
            usermod --shell /bin/sh "$u"
        fi
        if [ "$(getent passwd "$u" | cut -d: -f6)" != "$HOME_BASE/$u" ]; then
            usermod --home "$HOME_BASE/$u" "$u"
        fi
    fi
    mkdir -p "$HOME_BASE/$u"
    chown "$u:" "$HOME_BASE/$u"
    chmod 0755 "$HOME_BASE/$u"
    # Never a member of the distribution's admin groups.
    for g in sudo wheel admin; do
        if getent group "$g" >/dev/null 2>&1; then
            gpasswd -d "$u" "$g" >/dev/null 2>&1 || true
        fi
    done
}

for u in luumen-key luumen-sudo luumen-pass luumen-nosudo; do
    ensure_user "$u"
done

echo "luumen-pass:$PASSWORD" | chpasswd
for u in luumen-key luumen-sudo luumen-nosudo; do
    if [ "$(getent shadow "$u" | cut -d: -f2)" != '*' ]; then
        usermod --password '*' "$u"
    fi
done

# --- sudo rules -------------------------------------------------------------
CAT="$(command -v cat)"
tmp="$(mktemp /tmp/luumen-sudoers.XXXXXX)"
trap 'rm -f "$tmp"' EXIT
cat >"$tmp" <<EOF
# Managed by luumen-agent tests/setup/test-users.sh (integration tests only).
Cmnd_Alias LUUMEN_TEST_CMDS = /usr/sbin/dmidecode, /usr/sbin/getenforce, \\
    /usr/sbin/tuned-adm, \\
    $CAT /var/spool/cron/crontabs/root, \\
    $CAT /var/spool/cron/tabs/root, \\
    $CAT /var/spool/cron/root
luumen-key, luumen-sudo, luumen-pass ALL = (root) NOPASSWD: LUUMEN_TEST_CMDS
EOF
visudo -cqf "$tmp"
if ! cmp -s "$tmp" "$SUDOERS" 2>/dev/null; then
    install -o root -g root -m 0440 "$tmp" "$SUDOERS.tmp"
    mv -f "$SUDOERS.tmp" "$SUDOERS"
fi
chmod 0440 "$SUDOERS"
visudo -cq

# --- root crontab (only if absent) -------------------------------------------
if [ ! -e "$CRONTAB_DIR/root" ]; then
    mkdir -p "$CRONTAB_DIR"
    ctmp="$CRONTAB_DIR/.luumen-root.tmp"
    cat >"$ctmp" <<'EOF'
# luumen-test: root crontab created by luumen-agent integration tests
17 3 * * * /usr/bin/true # luumen-test
*/30 * * * * /bin/echo luumen >/dev/null # luumen-test
EOF
    if getent group crontab >/dev/null 2>&1; then
        chown root:crontab "$ctmp"
    else
        chown root:root "$ctmp"
    fi
    chmod 0600 "$ctmp"
    mv -f "$ctmp" "$CRONTAB_DIR/root"
fi

echo "test-users.sh: ok"
