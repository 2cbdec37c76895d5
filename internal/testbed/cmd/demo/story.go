package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"time"
)

// deployStory: v1 of a web app deploys and serves; v2's ValidateService
// fails and the agent rolls back to v1 by itself.
func (d *demo) deployStory(ctx context.Context) error {
	v1 := filepath.Join(d.dir, "web-v1.tgz")
	v2 := filepath.Join(d.dir, "web-v2.tgz")
	if err := d.app.Revision("v1", "").TarGz(v1); err != nil {
		return err
	}
	if err := d.app.Revision("v2", "echo 'v2: /health answers 500' >&2; exit 1").TarGz(v2); err != nil {
		return err
	}

	step("Deploying web v1 (a CodeDeploy-style bundle: appspec.yml, files, hooks)")
	if err := d.ctl(ctx, "deploy", v1, "--wait"); err != nil {
		return err
	}
	fmt.Printf("GET %s -> %s\n", d.app.URL(), get(d.app.URL()))

	step("Deploying web v2, whose ValidateService fails: the agent rolls back to v1 by itself")
	code, err := d.ctlCode(ctx, "deploy", v2, "--wait")
	if err != nil {
		return err
	}
	if code != 1 {
		return fmt.Errorf("deploying v2 should exit 1 (rolled back), got %d", code)
	}
	fmt.Printf("GET %s -> %s\n", d.app.URL(), get(d.app.URL()))

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
	step("agentctl status")
	return d.ctl(ctx, "status")
}

// watchStory: v3 passes ValidateService and the first assessment, then
// its HTTP check fails a few seconds later, inside the watch window: the
// agent rolls back to v1 without anyone asking.
func (d *demo) watchStory(ctx context.Context) error {
	v3 := filepath.Join(d.dir, "web-v3.tgz")
	rev := d.app.Revision("v3", "")
	rev.Hooks["ApplicationStart"] = fmt.Sprintf("(sleep 4; kill $(cat %s/web.pid)) >/dev/null 2>&1 &\n", d.app.Run) + rev.Hooks["ApplicationStart"]
	if err := rev.TarGz(v3); err != nil {
		return err
	}
	step("Deploying web v3: it passes ValidateService and the health assessment, then breaks 4 s later")
	if err := d.ctl(ctx, "deploy", v3, "--wait"); err != nil {
		return err
	}
	fmt.Printf("GET %s -> %s\n", d.app.URL(), get(d.app.URL()))
	step("The watch window (20 s) sees the HTTP check fail and rolls back by itself; waiting for it")
	if err := d.ctl(ctx, "status"); err != nil {
		return err
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if strings.HasPrefix(get(d.app.URL()), "v1") {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	time.Sleep(time.Second)
	fmt.Printf("GET %s -> %s\n", d.app.URL(), get(d.app.URL()))
	step("agentctl history")
	return d.ctl(ctx, "history")
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
