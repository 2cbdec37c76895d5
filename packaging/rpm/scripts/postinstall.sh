# %post of rollback-agent. $1: 1 on a first install, 2 or more on an upgrade.
# Runs on hosts without a running systemd too (image builds, chroots):
# enabling is only symlinks; reloading and restarting need systemd.
unit=rollback-agent.service
running() { [ -d /run/systemd/system ]; }

# The socket group must exist before the daemon starts (it chowns the
# socket to it). No file of the package is owned by it, so %post is soon
# enough.
if command -v systemd-sysusers >/dev/null 2>&1; then
	systemd-sysusers /usr/lib/sysusers.d/rollback-agent.conf ||
		echo "rollback-agent: systemd-sysusers failed; create the group rollback-agent" >&2
elif ! getent group rollback-agent >/dev/null 2>&1; then
	groupadd -r rollback-agent || echo "rollback-agent: could not create the group rollback-agent" >&2
fi
if command -v systemd-tmpfiles >/dev/null 2>&1; then
	systemd-tmpfiles --create /usr/lib/tmpfiles.d/rollback-agent.conf || :
fi
command -v systemctl >/dev/null 2>&1 || exit 0
if running; then
	systemctl daemon-reload || :
fi
if [ "$1" -eq 1 ]; then
	# Enabled, not started: the agent needs application in agent.yaml
	# first (scripts/install.sh writes it and starts the unit).
	systemctl enable "$unit" || echo "rollback-agent: could not enable $unit" >&2
elif running; then
	# Restart only if it runs: a stopped or unconfigured agent stays so.
	systemctl try-restart "$unit" || echo "rollback-agent: restart of $unit failed; see journalctl -u rollback-agent" >&2
fi
exit 0
