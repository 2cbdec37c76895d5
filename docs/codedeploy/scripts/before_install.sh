#!/bin/sh
# BeforeInstall under CodeDeploy: take the host's rollback point, labelled
# with the CodeDeploy deployment id so `agentctl checkpoint list` ties it
# to the deployment. No agent, no checkpoint, no deployment: the exit
# status fails the hook.
set -eu
exec agentctl checkpoint create --label "$DEPLOYMENT_ID" --wait=false
