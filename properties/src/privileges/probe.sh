# luumen-agent doctor probe (read-only, POSIX sh). Asks sudo whether each privileged read of the
# collection plan is allowed without a password — `sudo -n -l CMD` lists, it does not run CMD.
export LC_ALL=C LANG=C
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
printf 'user %s\n' "$(id -un 2>/dev/null)"
if [ "$(id -u 2>/dev/null)" = 0 ]; then echo 'root yes'; fi
have_sudo=no
command -v sudo >/dev/null 2>&1 && have_sudo=yes
printf 'sudo %s\n' "$have_sudo"
# check NAME CMD [ARGS]: "check NAME allowed|denied|absent FULL-COMMAND"
check() {
	name=$1; shift
	bin=$(command -v "$1" 2>/dev/null) || { printf 'check %s absent %s\n' "$name" "$1"; return; }
	shift
	full="$bin${1:+ $*}"
	if [ "$have_sudo" = yes ] && sudo -n -l "$bin" "$@" >/dev/null 2>&1 </dev/null; then
		printf 'check %s allowed %s\n' "$name" "$full"
	else
		printf 'check %s denied %s\n' "$name" "$full"
	fi
}
check dmidecode dmidecode
check getenforce getenforce
check tuned-adm tuned-adm
if [ -d /var/spool/cron/tabs ]; then p=/var/spool/cron/tabs/root
elif [ -d /var/spool/cron/crontabs ]; then p=/var/spool/cron/crontabs/root
else p=/var/spool/cron/root; fi
check root-crontab cat "$p"
exit 0
