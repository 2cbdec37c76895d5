# %postun of rollback-agent. $1: 0 when the package is gone, 1 or more on
# an upgrade. /var/lib/rollback-agent (journal, releases, the checkpoint
# cache) is never removed: it is how a reinstalled agent finds its state.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
	systemctl daemon-reload || :
fi
exit 0
