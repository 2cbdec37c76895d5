# %preun of rollback-agent. $1: 0 when the package goes away, 1 or more on
# an upgrade (the new %post restarts the unit then).
# Stopping kills only the daemon (KillMode=process): the applications its
# hooks started keep running.
unit=rollback-agent.service
if [ "$1" -eq 0 ] && command -v systemctl >/dev/null 2>&1; then
	if [ -d /run/systemd/system ]; then
		systemctl stop "$unit" || :
	fi
	systemctl disable "$unit" || :
fi
exit 0
