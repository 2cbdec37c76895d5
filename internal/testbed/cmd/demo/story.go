package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/testbed"
)

// deployStory: v1 of a web app deploys and serves; v2's ValidateService
// fails and the agent rolls back to v1 by itself.
func (d *demo) deployStory(ctx context.Context) error {
	port, err := testbed.FreePort()
	if err != nil {
		return err
	}
	d.app = testbed.WebApp{Dir: filepath.Join(d.dir, "srv", "web"), Run: filepath.Join(d.dir, "run"), Port: port}
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
	step("agentctl checkpoint list: the EBS snapshot set each deploy took of the instance (from AWS, by tags)")
	if err := d.ctl(ctx, "checkpoint", "list"); err != nil {
		return err
	}
	step("agentctl status")
	return d.ctl(ctx, "status")
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
