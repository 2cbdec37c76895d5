package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/client"
)

// deployStory: the workstation pushes v1 to the release channel and the
// agent deploys it; v2, pushed the same way, fails ValidateService and
// the agent rolls back to v1 by itself; v3, pushed the same way, breaks
// inside the watch window and is rolled back too.
func (d *demo) deployStory(ctx context.Context) error {
	v1, v2 := filepath.Join(d.dir, "src", "web-v1"), filepath.Join(d.dir, "src", "web-v2")
	if err := d.app.Revision("v1", "").WriteDir(v1); err != nil {
		return err
	}
	if err := d.app.Revision("v2", "echo 'v2: /health answers 500' >&2; exit 1").WriteDir(v2); err != nil {
		return err
	}

	step("Workstation: push web v1 (a directory with appspec.yml, files, hooks) to S3, signed, and move channel prod to it")
	if err := d.push(ctx, v1, "v1"); err != nil {
		return err
	}
	if _, err := d.waitChannelDeploy(ctx, "v1"); err != nil {
		return err
	}
	fmt.Printf("GET %s -> %s\n", d.app.URL(), get(d.app.URL()))

	step("Workstation: push web v2, whose ValidateService fails; the agent deploys it and rolls back to v1 by itself")
	if err := d.push(ctx, v2, "v2"); err != nil {
		return err
	}
	dep, err := d.waitChannelDeploy(ctx, "v2")
	if err != nil {
		return err
	}
	if dep != "rolled_back" {
		return fmt.Errorf("v2 from the channel should end rolled_back, ended %s", dep)
	}
	fmt.Printf("GET %s -> %s\n", d.app.URL(), get(d.app.URL()))

	step("Workstation: agentctl releases, what S3 holds and where the channel points")
	if err := d.workstation(ctx, "releases", "--bucket", demoBucket, "--app", "demo"); err != nil {
		return err
	}
	step("agentctl history")
	if err := d.ctl(ctx, "history"); err != nil {
		return err
	}
	if err := d.watchStory(ctx); err != nil {
		return err
	}

	step("agentctl checkpoint list: the EBS snapshot set each deploy took of the instance (from AWS, by tags)")
	if err := d.ctl(ctx, "checkpoint", "list"); err != nil {
		return err
	}
	step("agentctl doctor: what a first real run needs, checked with the agent's own credentials (here the bed's test keys, so credentials warn)")
	if err := d.ctl(ctx, "doctor"); err != nil {
		return err
	}
	step("agentctl status")
	return d.ctl(ctx, "status")
}

// watchStory: v3 passes ValidateService and the first assessment, then
// its HTTP check fails a few seconds later, inside the watch window: the
// agent rolls back to v1 without anyone asking.
func (d *demo) watchStory(ctx context.Context) error {
	v3 := filepath.Join(d.dir, "src", "web-v3")
	rev := d.app.Revision("v3", "")
	rev.Hooks["ApplicationStart"] = fmt.Sprintf("(sleep 4; kill $(cat %s/web.pid)) >/dev/null 2>&1 &\n", d.app.Run) + rev.Hooks["ApplicationStart"]
	if err := rev.WriteDir(v3); err != nil {
		return err
	}
	step("Workstation: push web v3; it passes ValidateService and the health assessment, then breaks 4 s later")
	if err := d.push(ctx, v3, "v3"); err != nil {
		return err
	}
	status, err := d.waitChannelDeploy(ctx, "v3")
	if err != nil {
		return err
	}
	if status != api.StatusSucceeded {
		return fmt.Errorf("v3 from the channel should first succeed, ended %s", status)
	}
	fmt.Printf("GET %s -> %s\n", d.app.URL(), get(d.app.URL()))
	step("The watch window (20 s) sees the HTTP check fail and rolls back by itself; waiting for it")
	if err := d.ctl(ctx, "status"); err != nil {
		return err
	}
	if err := d.waitRolledBack(ctx, "v3"); err != nil {
		return err
	}
	body := get(d.app.URL())
	fmt.Printf("GET %s -> %s\n", d.app.URL(), body)
	if !strings.HasPrefix(body, "v1") {
		return fmt.Errorf("after the watch window rolled v3 back, the app should serve v1, it answers %q", body)
	}
	step("agentctl history")
	return d.ctl(ctx, "history")
}

// waitRolledBack waits until the newest deployment of version is
// rolled_back, or fails after a minute.
func (d *demo) waitRolledBack(ctx context.Context, version string) error {
	c := client.New(d.socket)
	defer c.Close()
	deadline := time.Now().Add(time.Minute)
	last := api.DeploymentStatus("unknown")
	for time.Now().Before(deadline) {
		deps, err := c.Deployments(ctx, 5)
		if err != nil {
			return fmt.Errorf("wait for the rollback of %s: %w", version, err)
		}
		for _, dep := range deps {
			if dep.Revision == version {
				last = dep.Status
				break
			}
		}
		if last == api.StatusRolledBack {
			return nil
		}
		time.Sleep(300 * time.Millisecond)
	}
	return fmt.Errorf("the watch window did not roll %s back in a minute: its deployment is %s", version, last)
}

func get(url string) string {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "error: " + err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b))
}
