package main

import (
	"testing"

	"github.com/rollback-agent/rollback-agent/internal/deptest"
)

// The daemon runs as root on every host: it carries none of the
// workstation side and nothing test-only.
func TestDeps(t *testing.T) {
	const p = "github.com/rollback-agent/rollback-agent/internal/"
	deptest.Forbid(t, ".", map[string]string{
		p + "cli":                    "agentctl's commands",
		p + "push":                   "the workstation side (bundling, signing, uploading)",
		p + "testbed/...":            "test-only",
		"github.com/spf13/cobra/...": "agentctl's command line",
		"github.com/aws/aws-sdk-go-v2/service/codedeploy": "CodeDeploy calls are the workstation's",
	})
}
