#!/bin/sh
# ValidateService under CodeDeploy: the agent's health checks are the
# gate. agentctl health exits 1 when a check fails, which fails the hook.
set -eu
exec agentctl health
