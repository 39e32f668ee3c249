# luumen-agent Linux collection script (read-only, POSIX sh: dash, bash, busybox ash).
# Two lines are prepended by Plan::linux: M='@@LUUMEN-<nonce>@@' and LUUMEN_SUDO=0|1.
# This script arrives on stdin: no command below may read stdin (every section
# runs with </dev/null). It writes no file anywhere.
export LC_ALL=C LANG=C
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
umask 077

S=
if [ "$(id -u 2>/dev/null)" != 0 ] && [ "${LUUMEN_SUDO:-0}" = 1 ]; then S='sudo -n'; fi

# sec NAME FUNCTION: BEGIN marker, the function in a subshell, END marker with rc.
sec() {
	printf '%s BEGIN %s\n' "$M" "$1"
	printf '%s BEGIN %s\n' "$M" "$1" >&2
	( "$2" ) </dev/null
	_rc=$?
	printf '\n%s END %s %03d\n' "$M" "$1" "$_rc"
	printf '\n%s END %s %03d\n' "$M" "$1" "$_rc" >&2
}

have() { command -v "$1" >/dev/null 2>&1; }

# Print FILE under a '==> FILE <==' header (always newline-terminated).
show() {
	if [ -r "$1" ]; then
		printf '==> %s <==\n' "$1"
		_c=$(cat "$1") && printf '%s\n' "$_c"
	else
		echo "luumen: cannot read $1" >&2
	fi
}

s_os_release() {
	if [ -r /etc/os-release ]; then cat /etc/os-release
	elif [ -r /usr/lib/os-release ]; then cat /usr/lib/os-release
	else echo 'luumen: no os-release file' >&2; exit 2; fi
}

s_os_legacy() {
	for f in /etc/*-release /etc/*_version /etc/alpine-release; do
		case $f in /etc/os-release|*'*'*) continue ;; esac
		[ -f "$f" ] && show "$f"
	done
	exit 0
}

s_uname() { uname -n && uname -r && uname -m; }

s_uptime() { cat /proc/uptime && grep '^btime ' /proc/stat; }

DMI=/sys/devices/virtual/dmi/id
[ -d "$DMI" ] || DMI=/sys/class/dmi/id
s_dmi() {
	if [ ! -d "$DMI" ]; then echo 'luumen: no DMI information' >&2; exit 0; fi
	for k in sys_vendor product_name product_version product_serial product_uuid \
		bios_vendor bios_version bios_date chassis_vendor board_vendor board_name; do
		if [ -r "$DMI/$k" ]; then
			v=$(cat "$DMI/$k" 2>/dev/null) && printf '%s=%s\n' "$k" "$v"
		elif [ -e "$DMI/$k" ]; then
			printf '%s!unreadable\n' "$k"
		fi
	done
	exit 0
}

s_dmidecode() {
	have dmidecode || { echo 'luumen: dmidecode not found' >&2; exit 127; }
	$S dmidecode -t bios -t system
}

s_cpuinfo() {
	grep -E '^(processor|vendor_id|model name|physical id|siblings|core id|cpu cores|Processor|Hardware|CPU implementer|CPU part|cpu|machine)[[:space:]]*:' /proc/cpuinfo
}

s_meminfo() { grep -E '^(MemTotal|SwapTotal):' /proc/meminfo; }

s_virt() {
	have systemd-detect-virt || { echo 'luumen: systemd-detect-virt not found' >&2; exit 127; }
	systemd-detect-virt
}

s_packages_dpkg() { grep -E '^(Package|Status|Version|Architecture|Source):|^$' /var/lib/dpkg/status; }

s_packages_rpm() { rpm -qa --queryformat '%{NAME} %{EPOCH} %{VERSION} %{RELEASE} %{ARCH} %{SOURCERPM}\n'; }

s_packages_apk() { grep -E '^(P|V|A|o):|^$' /lib/apk/db/installed; }

s_selinux() {
	if [ -r /sys/fs/selinux/enforce ]; then
		v=$(cat /sys/fs/selinux/enforce 2>/dev/null) && printf 'enforce=%s\n' "$v"
	fi
	if have getenforce; then
		v=$(getenforce 2>/dev/null) || { [ -n "$S" ] && v=$($S getenforce 2>/dev/null); } || v=
		[ -n "$v" ] && printf 'getenforce=%s\n' "$v"
	fi
	if [ -r /etc/selinux/config ]; then
		echo 'config=present'
		grep -E '^[[:space:]]*SELINUX(TYPE)?=' /etc/selinux/config
	fi
	exit 0
}

s_tuned() {
	have tuned-adm && echo 'tuned_adm=present'
	[ -d /etc/tuned ] && echo 'etc_tuned=present'
	if [ -r /etc/tuned/active_profile ]; then
		v=$(cat /etc/tuned/active_profile 2>/dev/null) && printf 'active_profile=%s\n' "$v"
	elif have tuned-adm; then
		$S tuned-adm active 2>&1 | sed 's/^/tuned_adm_active=/'
	fi
	if have systemctl; then
		v=$(systemctl is-active tuned 2>/dev/null)
		[ -n "$v" ] && printf 'service=%s\n' "$v"
	fi
	exit 0
}

s_cron_root() {
	if [ -d /var/spool/cron/tabs ]; then p=/var/spool/cron/tabs/root
	elif [ -d /var/spool/cron/crontabs ]; then p=/var/spool/cron/crontabs/root
	else p=/var/spool/cron/root; fi
	printf '==> %s <==\n' "$p"
	$S cat "$p"
}

s_cron_system() {
	for f in /etc/crontab /etc/cron.d/*; do
		case $f in *'*'*) continue ;; esac
		[ -f "$f" ] && show "$f"
	done
	exit 0
}

s_services_units() {
	have systemctl || { echo 'luumen: systemctl not found (no systemd)' >&2; exit 127; }
	systemctl list-units --type=service --all --no-legend --no-pager --plain
}

s_services_unit_files() {
	have systemctl || { echo 'luumen: systemctl not found (no systemd)' >&2; exit 127; }
	# sd_booted(3): without a running systemd, list-unit-files scans every unit file slowly
	# (~0.4 s) for a property that is unavailable anyway.
	[ -d /run/systemd/system ] || { echo 'luumen: System has not been booted with systemd (no /run/systemd/system)' >&2; exit 1; }
	systemctl list-unit-files --type=service --no-legend --no-pager
}

sec os_release s_os_release
sec os_legacy s_os_legacy
sec uname s_uname
sec uptime s_uptime
sec dmi s_dmi
for k in product_serial product_uuid; do
	if [ -e "$DMI/$k" ] && [ ! -r "$DMI/$k" ]; then sec dmidecode s_dmidecode; break; fi
done
sec cpuinfo s_cpuinfo
sec meminfo s_meminfo
sec virt s_virt
[ -f /var/lib/dpkg/status ] && sec packages_dpkg s_packages_dpkg
if have rpm && { [ -d /var/lib/rpm ] || [ -d /usr/lib/sysimage/rpm ]; }; then sec packages_rpm s_packages_rpm; fi
[ -f /lib/apk/db/installed ] && sec packages_apk s_packages_apk
sec selinux s_selinux
sec tuned s_tuned
sec cron_root s_cron_root
sec cron_system s_cron_system
sec services_units s_services_units
sec services_unit_files s_services_unit_files
exit 0
