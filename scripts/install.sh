#!/bin/bash
# install.sh: install and start rollback-agent on an EC2 instance, from user
# data or by hand. Safe to run again: a second run with the same arguments
# changes nothing (same package: not reinstalled; same config: not
# rewritten; running: not restarted). Once the agent answers, it prints
# `agentctl doctor`: what a first real run still lacks.
#
#   install.sh --package s3://bucket/rollback-agent-1.2.3-1.x86_64.rpm --application myapp \
#              [--channel s3://bucket/prefix/myapp/channels/prod.json] [--ladder revision,volumes]
#              [--alarm NAME[,NAME...]] [--package-managers] [--config FILE] [--no-start] [--wait SECONDS]
#
# Every option has an environment variable (see usage below). For tests and
# image builds the paths and commands are overridable too: ROOT (install
# into another root; default /), RPM, DPKG, SYSTEMCTL, AGENTCTL, AWS, CURL.
set -euo pipefail

usage() {
	cat <<'EOF'
usage: install.sh --package SRC (--application NAME | --config FILE) [options]

  --package SRC          the rollback-agent .rpm or .deb: s3://..., https://... or a path
                         (env ROLLBACK_AGENT_PACKAGE)
  --application NAME     application name; the config is written from the options
                         (env ROLLBACK_AGENT_APPLICATION)
  --channel URL          S3 release channel to follow (env ROLLBACK_AGENT_CHANNEL)
  --ladder RUNGS         rungs the agent may climb by itself, e.g. revision,volumes
                         (env ROLLBACK_AGENT_LADDER)
  --alarm NAMES          CloudWatch alarms (comma-separated) whose ALARM state is unhealthy
                         (env ROLLBACK_AGENT_ALARMS)
  --package-managers     checkpoint before every apt/dnf transaction
                         (env ROLLBACK_AGENT_PACKAGE_MANAGERS=true)
  --config FILE          install this agent.yaml as it is instead (env ROLLBACK_AGENT_CONFIG)
  --no-start             install and configure only, e.g. while baking an AMI
                         (env ROLLBACK_AGENT_NO_START=true)
  --wait SECONDS         how long to wait for `agentctl status` (env ROLLBACK_AGENT_WAIT; 180)
  -h, --help             this text
EOF
}

log() { echo "install.sh: $*" >&2; }
die() {
	log "$*"
	exit 1
}

package=${ROLLBACK_AGENT_PACKAGE:-}
application=${ROLLBACK_AGENT_APPLICATION:-}
channel=${ROLLBACK_AGENT_CHANNEL:-}
ladder=${ROLLBACK_AGENT_LADDER:-}
alarms=${ROLLBACK_AGENT_ALARMS:-}
package_managers=${ROLLBACK_AGENT_PACKAGE_MANAGERS:-false}
config_file=${ROLLBACK_AGENT_CONFIG:-}
no_start=${ROLLBACK_AGENT_NO_START:-false}
wait_seconds=${ROLLBACK_AGENT_WAIT:-180}

while [ $# -gt 0 ]; do
	case "$1" in
	--package) package=${2:?--package needs a value}; shift 2 ;;
	--application) application=${2:?--application needs a value}; shift 2 ;;
	--channel) channel=${2:?--channel needs a value}; shift 2 ;;
	--ladder) ladder=${2:?--ladder needs a value}; shift 2 ;;
	--alarm) alarms=${2:?--alarm needs a value}; shift 2 ;;
	--package-managers) package_managers=true; shift ;;
	--config) config_file=${2:?--config needs a value}; shift 2 ;;
	--no-start) no_start=true; shift ;;
	--wait) wait_seconds=${2:?--wait needs a value}; shift 2 ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; die "unknown option: $1" ;;
	esac
done

ROOT=${ROOT:-/}
ROOT=${ROOT%/}
RPM=${RPM:-rpm}
DPKG=${DPKG:-dpkg}
SYSTEMCTL=${SYSTEMCTL:-systemctl}
AGENTCTL=${AGENTCTL:-$ROOT/usr/bin/agentctl}
AWS=${AWS:-aws}
CURL=${CURL:-curl}
unit=rollback-agent.service
conf="$ROOT/etc/rollback-agent/agent.yaml"

[ -n "$package" ] || { usage >&2; die "--package is required"; }
[ -n "$application" ] || [ -n "$config_file" ] || { usage >&2; die "--application or --config is required"; }
case "$wait_seconds" in '' | *[!0-9]*) die "--wait $wait_seconds: want a number of seconds" ;; esac

work=$(mktemp -d "${TMPDIR:-/tmp}/rollback-agent-install.XXXXXX")
trap 'rm -rf "$work"' EXIT

# fetch SRC: a local path for the package, downloading it when remote.
fetch() {
	local src=$1 dst
	case "$src" in
	s3://*)
		dst="$work/$(basename "$src")"
		log "downloading $src"
		"$AWS" s3 cp --only-show-errors "$src" "$dst" >&2 || die "cannot download $src (instance profile, bucket, region?)"
		;;
	http://* | https://*)
		dst="$work/$(basename "${src%%\?*}")"
		log "downloading $src"
		"$CURL" -fsSL --retry 5 -o "$dst" "$src" || die "cannot download $src"
		;;
	*)
		[ -f "$src" ] || die "no package at $src"
		dst=$src
		;;
	esac
	echo "$dst"
}

# install_package FILE: installs unless that exact version is there; sets
# package_changed.
package_changed=false
install_package() {
	local file=$1 want have
	case "$file" in
	*.rpm)
		want=$("$RPM" -qp --qf '%{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}' "$file" 2>/dev/null) ||
			die "$file is not a readable RPM"
		if "$RPM" --root "${ROOT:-/}" -q "$want" >/dev/null 2>&1; then
			log "$want is installed already"
			return
		fi
		log "installing $want"
		"$RPM" --root "${ROOT:-/}" -U "$file" >&2 || die "rpm -U $file failed"
		;;
	*.deb)
		want=$(dpkg-deb -f "$file" Version) || die "$file is not a readable deb"
		have=$(dpkg-query --admindir="$ROOT/var/lib/dpkg" -W -f '${Version} ${db:Status-Abbrev}' rollback-agent 2>/dev/null || true)
		if [ "$have" = "$want ii " ]; then
			log "rollback-agent $want is installed already"
			return
		fi
		log "installing rollback-agent $want"
		# confold: an upgrade keeps the agent.yaml this script wrote,
		# without asking (user data has no one to ask).
		"$DPKG" --root="${ROOT:-/}" --force-confdef --force-confold -i "$file" >&2 || die "dpkg -i $file failed"
		;;
	*) die "$file: want a .rpm or a .deb" ;;
	esac
	package_changed=true
}

# write_config: renders agent.yaml from the options (or takes --config),
# checks it with the installed daemon, and replaces the file only when the
# content differs; sets config_changed.
config_changed=false
write_config() {
	local new="$work/agent.yaml"
	if [ -n "$config_file" ]; then
		cp "$config_file" "$new"
	else
		{
			echo "# Written by scripts/install.sh; running it again with the same options changes nothing."
			echo "# Every key: /usr/share/doc/rollback-agent and the README's config reference."
			echo "application: $application"
			if [ -n "$channel" ]; then
				printf 'sources:\n  channel: %s\n' "$channel"
			fi
			if [ "$package_managers" = true ]; then
				printf 'checkpoint:\n  package_managers: true\n'
			fi
			if [ -n "$ladder" ]; then
				printf 'rollback:\n  ladder: [%s]\n' "${ladder//,/, }"
			fi
			if [ -n "$alarms" ]; then
				printf 'health:\n  checks:\n    - name: alarms\n      cloudwatch_alarm:\n        alarm_names:\n'
				local name
				IFS=, read -r -a names <<<"$alarms"
				for name in "${names[@]}"; do
					# YAML single quotes: a quote inside is doubled.
					printf "          - '%s'\n" "${name//\'/\'\'}"
				done
			fi
		} >"$new"
	fi
	"$ROOT/usr/bin/rollback-agent" --check-config --config "$new" >/dev/null ||
		die "the config is not valid (above); nothing was changed"
	if [ -f "$conf" ] && cmp -s "$new" "$conf"; then
		log "$conf is up to date"
		return
	fi
	mkdir -p "$(dirname "$conf")"
	install -m 0644 "$new" "$conf.install-tmp"
	mv -f "$conf.install-tmp" "$conf"
	log "wrote $conf"
	config_changed=true
}

start_agent() {
	if ! "$SYSTEMCTL" is-enabled --quiet "$unit" 2>/dev/null; then
		"$SYSTEMCTL" enable "$unit" >&2 || die "systemctl enable $unit failed"
	fi
	# --no-block: started from cloud-final, the unit must not wait on the
	# job that starts it; the status loop below does the waiting.
	if ! "$SYSTEMCTL" is-active --quiet "$unit" 2>/dev/null; then
		log "starting $unit"
		"$SYSTEMCTL" start --no-block "$unit" >&2 || die "systemctl start $unit failed"
	elif [ "$package_changed" = true ] || [ "$config_changed" = true ]; then
		log "restarting $unit (new package or config)"
		"$SYSTEMCTL" restart --no-block "$unit" >&2 || die "systemctl restart $unit failed"
	fi
}

wait_for_status() {
	local deadline=$((SECONDS + wait_seconds))
	while :; do
		if out=$("$AGENTCTL" status --timeout 5s 2>&1); then
			log "rollback-agent answers:"
			echo "$out" >&2
			return
		fi
		if "$SYSTEMCTL" is-failed --quiet "$unit" 2>/dev/null; then
			log "$unit failed to start: $out"
			break
		fi
		if [ "$SECONDS" -ge "$deadline" ]; then
			log "no answer from agentctl status after ${wait_seconds}s: $out"
			break
		fi
		sleep 1
	done
	journalctl -u "$unit" -n 40 --no-pager >&2 2>/dev/null || true
	die "rollback-agent is not running; see journalctl -u rollback-agent"
}

# print_doctor: what a first real run needs, checked by the agent with
# its own credentials (agentctl doctor). Printed, not fatal: the agent
# runs; a failed check says what to fix before a deployment or a rollback
# would need it.
print_doctor() {
	local out
	if out=$("$AGENTCTL" doctor --timeout 60s 2>&1); then
		log "agentctl doctor:"
		echo "$out" >&2
	else
		log "agentctl doctor found problems (the agent runs, but fix these before relying on it):"
		echo "$out" >&2
	fi
}

install_package "$(fetch "$package")"
write_config
if [ "$no_start" = true ]; then
	log "installed and configured; not started (--no-start)"
	exit 0
fi
start_agent
wait_for_status
print_doctor
log "done"
