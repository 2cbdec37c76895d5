#!/bin/sh
# The jar would run here; a sleep stands in for it, its output redirected
# as CodeDeploy's docs ask.
cd {{dest}}/run
nohup sleep 3600 > server.log 2>&1 < /dev/null &
echo $! > server.pid
echo "started $(cat server.pid) as $(id -un)"
