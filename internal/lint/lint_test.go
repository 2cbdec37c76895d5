package lint

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// revision writes a revision directory: path -> content.
func revision(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for p, c := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const head = "version: 0.0\nos: linux\n"

// Every case of issue 14 point 7, what CodeDeploy's agent fails and this
// agent used to accept in silence: each is flagged, in the section that
// says who refuses it.
func TestLintFlagsEveryCodeDeployDifference(t *testing.T) {
	for name, c := range map[string]struct {
		files   map[string]string
		section string // errors, warnings, codedeploy
		want    string
	}{
		"background process holding stdout": {map[string]string{
			"appspec.yml":      head + "hooks:\n  ApplicationStart:\n    - location: scripts/start.sh\n",
			"scripts/start.sh": "#!/bin/sh\ncd /opt/app\n./server &\necho started\n",
		}, "codedeploy", "scripts/start.sh:3: `./server &` likely leaves a background process holding the script's STDOUT and STDERR: CodeDeploy's agent waits for it until the script's timeout and then fails the script (\"failed to close STDOUT\", error code 6)"},
		"two permissions on one path": {map[string]string{
			"appspec.yml":    head + "files:\n  - source: app\n    destination: /opt/lint-app\npermissions:\n  - object: /opt/lint-app\n    mode: 644\n    type: [file]\n  - object: /opt/lint-app/bin\n    pattern: \"*.sh\"\n    mode: 755\n",
			"app/bin/run.sh": "#!/bin/sh\n",
		}, "errors", "permissions[1] (line 10) and permissions[0] (line 7) both apply to /opt/lint-app/bin/run.sh; CodeDeploy's agent refuses a path two permissions match"},
		"unquoted mode 0755": {map[string]string{
			"appspec.yml": head + "permissions:\n  - object: /opt/lint-app\n    mode: 0755\n",
		}, "errors", `appspec.yml:5:11: permissions[0].mode: 0755 is unquoted: YAML 1.1, which CodeDeploy's agent reads, takes it for the octal number 493 and CodeDeploy refuses it`},
		"quoted version": {map[string]string{
			"appspec.yml": "version: \"0.0\"\nos: linux\n",
		}, "codedeploy", `appspec.yml:1:10: codedeploy: version: "0.0" is quoted`},
		"lowercase overwrite": {map[string]string{
			"appspec.yml": head + "file_exists_behavior: overwrite\n",
		}, "codedeploy", `appspec.yml:3:23: codedeploy: file_exists_behavior: "overwrite" is read as OVERWRITE here, but CodeDeploy's agent fails the deployment on it`},
		"misspelt event": {map[string]string{
			"appspec.yml":  head + "hooks:\n  AfterInstal:\n    - location: scripts/a.sh\n",
			"scripts/a.sh": "#!/bin/sh\n",
		}, "errors", `appspec.yml:4:3: hooks: unknown lifecycle event "AfterInstal" (did you mean "AfterInstall"?) would never run; CodeDeploy fails a deployment`},
		"only appspec.yaml": {map[string]string{
			"appspec.yaml": head,
		}, "codedeploy", "appspec.yaml: codedeploy: the revision has appspec.yaml and no appspec.yml"},
	} {
		t.Run(name, func(t *testing.T) {
			rep, err := Lint(t.Context(), revision(t, c.files))
			if err != nil {
				t.Fatal(err)
			}
			got := map[string][]string{"errors": rep.Errors, "warnings": rep.Warnings, "codedeploy": rep.CodeDeploy}
			if !strings.Contains(strings.Join(got[c.section], "\n"), c.want) {
				t.Errorf("%s lacks %q:\n%+v", c.section, c.want, got)
			}
			if (c.section == "errors") == rep.OK() {
				t.Errorf("OK() = %v with errors %v", rep.OK(), rep.Errors)
			}
		})
	}
}

// Redirected background processes are not flagged; half-redirected ones
// name the stream still held.
func TestLintBackgroundHeuristic(t *testing.T) {
	script := `#!/bin/bash
nohup ./a > /var/log/a.log 2>&1 &
./b &> /dev/null &
./c >/dev/null 2>/dev/null & # started
./d && ./e
echo "not & background"
./f > /var/log/f.log &
./g 2>&1 &
# ./h &
`
	rep, err := Lint(t.Context(), revision(t, map[string]string{
		"appspec.yml": head + "hooks:\n  ApplicationStart:\n    - location: start.sh\n", "start.sh": script,
	}))
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.CodeDeploy) != 2 || !strings.HasPrefix(rep.CodeDeploy[0], "start.sh:7: `./f > /var/log/f.log &` likely leaves a background process holding the script's STDERR") ||
		!strings.HasPrefix(rep.CodeDeploy[1], "start.sh:8: `./g 2>&1 &` likely leaves a background process holding the script's STDOUT and STDERR") {
		t.Errorf("findings:\n%s", strings.Join(rep.CodeDeploy, "\n"))
	}
}

// A bundle file is unpacked as the agent unpacks it: what Unpack refuses
// is an error too; accounts are listed for the hosts, not looked up here.
func TestLintBundleAndHostAccounts(t *testing.T) {
	dir := revision(t, map[string]string{
		"appspec.yml": head + "hooks:\n  ApplicationStart:\n    - location: s.sh\n      runas: some-deploy-user\npermissions:\n  - object: /opt/x\n    owner: some-app-user\n    group: some-app-group\n",
		"s.sh":        "#!/bin/sh\n",
	})
	rep, err := Lint(t.Context(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || strings.Join(rep.HostUsers, ",") != "some-app-user,some-deploy-user" || strings.Join(rep.HostGroups, ",") != "some-app-group" {
		t.Errorf("report %+v", rep)
	}
	bad := filepath.Join(t.TempDir(), "bundle.tar")
	os.WriteFile(bad, []byte("not an archive at all, just text\n"), 0o644)
	rep, err = Lint(t.Context(), bad)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || !strings.HasPrefix(rep.Errors[0], "Unpack: ") {
		t.Errorf("a broken bundle: %+v", rep)
	}
	if _, err := Lint(t.Context(), filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Errorf("a missing path gave a report")
	}
}
