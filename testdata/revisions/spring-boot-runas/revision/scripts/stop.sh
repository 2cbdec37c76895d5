#!/bin/sh
# Stop the server the previous revision started, as its own user.
pid=$(cat {{dest}}/run/server.pid 2>/dev/null) || exit 0
kill "$pid" 2>/dev/null || true
echo "stopped $pid as $(id -un)"
