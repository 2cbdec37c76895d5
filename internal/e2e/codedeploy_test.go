package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/rollback-agent/rollback-agent/internal/api"
)

// Values CodeDeploy's agent accepts are accepted (issue 14.4): the integer
// version 0, a timeout its to_i reads ("300s" is 300), the timeouts of an
// event adding up past 3600 s (the service limit is enforced at run time);
// each with a warning that says what was read. A relative destination is
// refused with the path to write instead.
func TestValuesCodeDeployAccepts(t *testing.T) {
	h := newHost(t, "")
	h.start()
	dest := filepath.Join(h.dir, "dest")
	spec := "version: 0\nos: linux\nfiles:\n  - source: app\n    destination: " + dest + "\nhooks:\n" +
		"  BeforeInstall:\n    - location: a.sh\n      timeout: 300s\n" +
		"  AfterInstall:\n    - location: a.sh\n      timeout: 2000\n    - location: a.sh\n      timeout: 2000\n"
	b := filepath.Join(h.dir, "values.tgz")
	writeTgz(t, b, tarEntry{name: "appspec.yml", body: spec}, tarEntry{name: "a.sh", body: "#!/bin/sh\necho ran\n", mode: 0o755}, tarEntry{name: "app/x", body: "x\n"})
	r, d := h.deployJSON(b)
	if r.code != 0 {
		t.Fatalf("exit %d %s", r.code, d.Error)
	}
	all := strings.Join(d.Warnings, "\n")
	for _, w := range []string{
		`appspec.yml:9:16: warning: hooks.BeforeInstall[0].timeout: "300s" is read as 300 seconds, as CodeDeploy's agent reads it`,
		"appspec.yml:10:3: warning: hooks.AfterInstall: the scripts' timeouts add up to 4000s",
	} {
		if !strings.Contains(all, w) {
			t.Errorf("warnings lack %q:\n%s", w, all)
		}
	}
	rel := filepath.Join(h.dir, "relative.tgz")
	writeTgz(t, rel, tarEntry{name: "appspec.yml", body: "version: 0.0\nos: linux\nfiles:\n  - source: /\n    destination: var/www/html\n"})
	r, d = h.deployJSON(rel)
	if r.code != 1 || !hasStep(&d, "Validate", api.StepFailed) || !strings.Contains(d.Error, `files[0].destination: "var/www/html" must be an absolute path (starting with /), e.g. "/var/www/html"`) {
		t.Errorf("relative destination: exit %d: %s", r.code, d.Error)
	}
}

// What CodeDeploy's agent fails (issue 14.7) is visible: deployed with a
// warning in the deployment's record, its event stream (deploy --wait) and
// agentctl show where the difference harms nobody; refused at Validate,
// before anything runs, where CodeDeploy's refusal protects the user. And
// agentctl lint says the same offline.
func TestCodeDeployRefusalsAreVisible(t *testing.T) {
	h := newHost(t, "")
	h.start()
	dest := filepath.Join(h.dir, "dest")
	stopMarker := filepath.Join(h.dir, "stopped")
	// Deployed, with warnings: appspec.yaml only, a quoted version, a
	// lower-case file_exists_behavior, a background process holding stdout.
	soft := filepath.Join(h.dir, "soft")
	os.MkdirAll(filepath.Join(soft, "app"), 0o755)
	os.WriteFile(filepath.Join(soft, "appspec.yaml"), []byte("version: \"0.0\"\nos: linux\nfile_exists_behavior: overwrite\nfiles:\n  - source: app\n    destination: "+dest+"\nhooks:\n  ApplicationStart:\n    - location: start.sh\n  ApplicationStop:\n    - location: stop.sh\n"), 0o644)
	os.WriteFile(filepath.Join(soft, "start.sh"), []byte("#!/bin/sh\nsleep 3600 &\necho $! > "+filepath.Join(h.dir, "bg.pid")+"\n"), 0o755)
	os.WriteFile(filepath.Join(soft, "stop.sh"), []byte("#!/bin/sh\nkill $(cat "+filepath.Join(h.dir, "bg.pid")+") 2>/dev/null; echo stopped >> "+stopMarker+"\n"), 0o755)
	os.WriteFile(filepath.Join(soft, "app", "index.html"), []byte("v1\n"), 0o644)
	t.Cleanup(func() {
		b, _ := os.ReadFile(filepath.Join(h.dir, "bg.pid"))
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	r := h.ctl("deploy", soft, "--wait")
	want := []string{
		`appspec.yaml:1:10: codedeploy: version: "0.0" is quoted`,
		`appspec.yaml:3:23: codedeploy: file_exists_behavior: "overwrite" is read as OVERWRITE here, but CodeDeploy's agent fails the deployment on it`,
		"appspec.yaml: codedeploy: the revision has appspec.yaml and no appspec.yml",
		"ApplicationStart: Script at specified location: start.sh failed to close STDOUT (OutputsLeftOpen, error code 6)",
	}
	if r.code != 0 {
		t.Fatalf("deploy: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	id := lastDeployment(h).ID
	show := h.ctl("show", id).stdout
	for _, w := range want {
		if !strings.Contains(r.stdout, "warning: "+w) {
			t.Errorf("deploy --wait output lacks %q:\n%s", w, r.stdout)
		}
		if !strings.Contains(show, "warning: "+w) {
			t.Errorf("agentctl show lacks %q:\n%s", w, show)
		}
	}
	// Refused at Validate, nothing run (not even the current revision's
	// ApplicationStop): a misspelt event, two permissions on one path, an
	// unquoted mode with a leading zero.
	for name, c := range map[string]struct{ spec, want string }{
		"misspelt-event": {"version: 0.0\nos: linux\nhooks:\n  AfterInstal:\n    - location: stop.sh\n", `hooks: unknown lifecycle event "AfterInstal" (did you mean "AfterInstall"?) would never run`},
		"two-permissions": {"version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: " + dest + "\npermissions:\n  - object: " + dest + "\n    mode: \"644\"\n  - object: " + dest + "\n    pattern: \"*.html\"\n    mode: \"600\"\n",
			"both apply to " + filepath.Join(dest, "index.html") + "; CodeDeploy's agent refuses a path two permissions match"},
		"unquoted-mode": {"version: 0.0\nos: linux\npermissions:\n  - object: " + dest + "\n    mode: 0755\n", "permissions[0].mode: 0755 is unquoted"},
	} {
		dir := filepath.Join(h.dir, name)
		os.MkdirAll(filepath.Join(dir, "app"), 0o755)
		os.WriteFile(filepath.Join(dir, "appspec.yml"), []byte(c.spec), 0o644)
		os.WriteFile(filepath.Join(dir, "stop.sh"), []byte("#!/bin/sh\n"), 0o755)
		os.WriteFile(filepath.Join(dir, "app", "index.html"), []byte("v2\n"), 0o644)
		os.Remove(stopMarker)
		r, d := h.deployJSON(dir)
		if r.code != 1 || !hasStep(&d, "Validate", api.StepFailed) || !strings.Contains(d.Error, c.want) {
			t.Errorf("%s: exit %d, %s: %s", name, r.code, d.Status, d.Error)
		}
		if _, err := os.Stat(stopMarker); err == nil {
			t.Errorf("%s: a hook ran before the refusal", name)
		}
		// agentctl lint, offline, refuses it too (exit 1).
		lr := runLint(t, h, dir)
		if lr.code != 1 || !strings.Contains(lr.stdout, "ERRORS (this agent refuses the revision)") || !strings.Contains(lr.stdout, c.want) {
			t.Errorf("lint %s: exit %d\n%s%s", name, lr.code, lr.stdout, lr.stderr)
		}
	}
	lr := runLint(t, h, soft)
	if lr.code != 0 || !strings.Contains(lr.stdout, "CODEDEPLOY (what CodeDeploy's agent would refuse or do differently)") {
		t.Fatalf("lint soft: exit %d\n%s%s", lr.code, lr.stdout, lr.stderr)
	}
	for _, w := range append(want[:3:3], "start.sh:2: `sleep 3600 &` likely leaves a background process holding the script's STDOUT and STDERR") {
		if !strings.Contains(lr.stdout, w) {
			t.Errorf("lint lacks %q:\n%s", w, lr.stdout)
		}
	}
}

// runLint runs the real agentctl lint: it needs no daemon.
func runLint(t *testing.T, h *host, path string) result {
	t.Helper()
	cmd := exec.Command(h.bins.Agentctl, "lint", path)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// Every deployment also writes its hooks' output to scripts.log in
// CodeDeploy's format (issue 14.8), which log shippers are configured for;
// the per-event files stay, and agentctl logs shows scripts.log on demand.
func TestScriptsLogInCodeDeploysFormatThroughTheDaemon(t *testing.T) {
	h := newHost(t, "")
	h.start()
	b := filepath.Join(h.dir, "out.tgz")
	writeTgz(t, b,
		tarEntry{name: "appspec.yml", body: "version: 0.0\nos: linux\nhooks:\n  BeforeInstall:\n    - location: a.sh\n  ValidateService:\n    - location: b.sh\n    - location: a.sh\n"},
		tarEntry{name: "a.sh", body: "#!/bin/sh\necho out-$LIFECYCLE_EVENT\necho err-$LIFECYCLE_EVENT >&2\n", mode: 0o755},
		tarEntry{name: "b.sh", body: "#!/bin/sh\necho b\n", mode: 0o755},
	)
	r, d := h.deployJSON(b)
	if r.code != 0 {
		t.Fatalf("exit %d %s", r.code, d.Error)
	}
	raw, err := os.ReadFile(filepath.Join(h.stateDir, "logs", d.ID, "scripts.log"))
	if err != nil {
		t.Fatal(err)
	}
	stamp := regexp.MustCompile(`^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d `)
	var body []string
	for _, l := range strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n") {
		if !stamp.MatchString(l) {
			t.Fatalf("line without CodeDeploy's timestamp: %q\n%s", l, raw)
		}
		body = append(body, stamp.ReplaceAllString(l, ""))
	}
	got := strings.Join(body, "\n")
	for _, w := range []string{
		"LifecycleEvent - BeforeInstall\nScript - a.sh\n",
		"[stdout]out-BeforeInstall", "[stderr]err-BeforeInstall",
		"LifecycleEvent - ValidateService\nScript - b.sh\n[stdout]b\nScript - a.sh\n",
		"[stdout]out-ValidateService", "[stderr]err-ValidateService",
	} {
		if !strings.Contains(got, w) {
			t.Errorf("scripts.log lacks %q:\n%s", w, got)
		}
	}
	if strings.Count(got, "LifecycleEvent - ValidateService") != 1 {
		t.Errorf("one LifecycleEvent line per event:\n%s", got)
	}
	if lr := h.ctl("logs", d.ID, "--event", "scripts"); !strings.Contains(lr.stdout, "[stdout]b") {
		t.Errorf("agentctl logs --event scripts:\n%s%s", lr.stdout, lr.stderr)
	}
	if lr := h.ctl("logs", d.ID); strings.Contains(lr.stdout, "[stdout]") || !strings.Contains(lr.stdout, "==> ValidateService.log <==") {
		t.Errorf("agentctl logs (all events):\n%s", lr.stdout)
	}
}
