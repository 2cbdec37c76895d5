package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/testbed"
)

// Issue 17 item 9: what health checks see may hold the application's
// secrets. A check URL's credentials reach nobody (not even the journal);
// a command check's output and an HTTP body reach root only, in every
// answer that carries check results: the health report, the status, a
// deployment's record, its event stream, the reason of a failure.
func TestHealthSecretsReachRootOnly(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, _ := r.BasicAuth(); u != "admin" || p != "S3cretPw" || r.URL.Query().Get("token") != "hunter2" {
			http.Error(w, "who are you", http.StatusUnauthorized)
			return
		}
		fmt.Fprint(w, "status page: db_password=hunter2")
	}))
	defer srv.Close()
	h := newHost(t, "")
	flag := filepath.Join(h.dir, "db-down")
	url := strings.Replace(srv.URL, "http://", "http://admin:S3cretPw@", 1) + "/health?token=hunter2"
	h.writeConfig("checkpoint: {before_deploy: [], required: false}\nrollback: {automatic: false}\n" + fastHealth(fmt.Sprintf(
		"    - {name: web, http: {url: %q, timeout: 1s}}\n    - {name: db, command: {argv: [/bin/sh, -c, \"echo db_password=hunter2; test ! -e %s\"], timeout: 5s}}",
		url, flag), 0))
	h.start()
	member := &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{testGID}}
	secrets := []string{"S3cretPw", "hunter2"}
	noSecret := func(what, text string) {
		t.Helper()
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("%s shows %q:\n%s", what, s, text)
			}
		}
	}

	// Healthy: v1 deploys; its assessment is in the status and the record.
	v1 := h.bundle("v1", testbed.Revision{Dest: filepath.Join(h.dir, "srv", "app"), Files: map[string]testbed.File{"v": {Content: "1"}}})
	if r := h.ctl("deploy", v1, "--wait"); r.code != 0 {
		t.Fatalf("deploy v1: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// Unhealthy: v2's command check fails, and its reason is journaled.
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	v2 := h.bundle("v2", testbed.Revision{Dest: filepath.Join(h.dir, "srv", "app"), Files: map[string]testbed.File{"v": {Content: "2"}}})
	r := h.ctl("deploy", v2, "--wait", "-o", "json")
	var d2 api.Deployment
	if err := json.Unmarshal([]byte(r.stdout), &d2); err != nil || d2.Status != api.StatusFailed {
		t.Fatalf("deploy v2: exit %d, status %s %v\n%s", r.code, d2.Status, err, r.stderr)
	}

	// Every answer a member can ask for.
	asMember := map[string]result{
		"health":         h.ctlAs(member, "health", "-o", "json"),
		"status":         h.ctlAs(member, "status", "-o", "json"),
		"history":        h.ctlAs(member, "history", "-o", "json"),
		"show":           h.ctlAs(member, "show", d2.ID, "-o", "json"),
		"health (table)": h.ctlAs(member, "health"),
		"status (table)": h.ctlAs(member, "status"),
	}
	for what, res := range asMember {
		if res.code > 1 {
			t.Errorf("member %s: exit %d %s", what, res.code, res.stderr)
		}
		noSecret("member's "+what, res.stdout+res.stderr)
	}
	_, events := curlAs(t, member, h.socket, "http://agent"+api.PathEvents+"?deployment="+d2.ID)
	noSecret("member's event stream", events)
	var rep api.HealthReport
	json.Unmarshal([]byte(asMember["health"].stdout), &rep)
	if len(rep.Checks) != 2 || !rep.Checks[0].DetailWithheld || !rep.Checks[1].DetailWithheld || rep.Checks[1].Output != "exit status 1" {
		t.Errorf("member's health report: %+v", rep.Checks)
	}
	if !strings.Contains(asMember["health (table)"].stdout, "details shown to root only") {
		t.Errorf("member's health table does not say the details are root's:\n%s", asMember["health (table)"].stdout)
	}
	// The reason of the failure, in the record and the status, names the
	// check and its exit status only.
	if !strings.Contains(d2.Error, "check db failed") || !strings.Contains(d2.Error, "exit status 1") {
		t.Errorf("v2's error: %q", d2.Error)
	}
	noSecret("the journaled error of v2", d2.Error)

	// Root sees what the checks saw, but never the URL's password.
	root := h.ctl("health", "-o", "json")
	var full api.HealthReport
	json.Unmarshal([]byte(root.stdout), &full)
	if len(full.Checks) != 2 || !strings.Contains(full.Checks[1].Detail, "db_password=hunter2") || !strings.Contains(full.Checks[0].Detail, "db_password=hunter2") {
		t.Errorf("root's health report lacks the details: %+v", full.Checks)
	}
	if !strings.Contains(full.Checks[0].Output, "admin:xxxxx@") || strings.Contains(root.stdout, "S3cretPw") {
		t.Errorf("root's report shows the URL's password, or no redacted URL: %s", root.stdout)
	}
	if out := h.agent.Output(); strings.Contains(out, "S3cretPw") {
		t.Errorf("the agent's log shows the URL's password")
	}
}
