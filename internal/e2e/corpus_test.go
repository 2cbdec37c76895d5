package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/rollback-agent/rollback-agent/internal/api"
)

// corpusCase is one revision of testdata/revisions, shaped like a public
// sample that CodeDeploy's agent and this one used to treat differently
// (issue 14), with what its deployments must say besides the golden tree.
type corpusCase struct {
	name   string
	modes  map[string]int64
	owners func(app testUser) map[string]tarOwner
	// warnings must appear in both deployments' warnings; second only in
	// the redeployment's.
	warnings, second []string
	// logs must appear in the deployment's hook output (agentctl logs).
	logs []string
	// check runs after each deployment.
	check func(t *testing.T, h *host, dest string, u testUser)
}

func corpusCases() []corpusCase {
	return []corpusCase{
		{
			// 14.1: every hook runas a normal user, with the package's
			// directory modes.
			name: "spring-boot-runas",
			logs: []string{"before install as rbt-ubuntu in /", "started ", "as rbt-ubuntu"},
			check: func(t *testing.T, h *host, dest string, u testUser) {
				if b, _ := os.ReadFile(filepath.Join(dest, "run/installed-by")); string(b) != u.name+"\n" {
					t.Errorf("AfterInstall ran as %q, want %s", b, u.name)
				}
				pid, _ := os.ReadFile(filepath.Join(dest, "run/server.pid"))
				if p, err := strconv.Atoi(strings.TrimSpace(string(pid))); err == nil {
					t.Cleanup(func() { syscall.Kill(p, syscall.SIGKILL) })
				}
				checkStateUnreadable(t, h, u)
			},
		},
		{name: "venv-python", logs: []string{"hello from the venv"}},
		{
			// 14.5: the second deployment finds a link where its
			// destination directory was.
			name:   "magento-swap",
			second: []string{"magento: the symlink to magento.real that replaced this directory after the previous install was replaced by a directory again"},
			logs:   []string{"magento is now magento.real"},
		},
		{
			name:     "acl-setuid",
			modes:    map[string]int64{"app/bin/helper": 0o4755},
			warnings: []string{"permissions[1]: mode 4755 with owner or group: the chown that follows the chmod clears the setuid/setgid bits"},
		},
		{
			name: "tar-owners",
			owners: func(app testUser) map[string]tarOwner {
				return map[string]tarOwner{
					// The developer's uid is not this host's uid of that
					// name: the name wins, as with GNU tar.
					"app/data/by-name.txt":   {uname: app.name, gname: app.name, uid: 4711, gid: 4711},
					"app/data/by-number.txt": {uid: 4712, gid: 4713},
				}
			},
		},
		{
			// 14.7: the usual ./server & holds the hook's stdout.
			name:     "sample-app-linux",
			warnings: []string{"ApplicationStart: Script at specified location: scripts/start_server failed to close STDOUT (OutputsLeftOpen, error code 6)"},
			logs:     []string{"dependencies installed", "server started"},
			check: func(t *testing.T, h *host, dest string, u testUser) {
				pid, _ := os.ReadFile(filepath.Join(dest, "server.pid"))
				if p, err := strconv.Atoi(strings.TrimSpace(string(pid))); err == nil {
					t.Cleanup(func() { syscall.Kill(p, syscall.SIGKILL) })
				}
			},
		},
		{name: "symlink-dir", warnings: []string{"is a symlink to a directory (releases/v1): it is installed as the link; CodeDeploy's agent copies the directory's contents instead"}},
	}
}

// Each revision of the corpus is deployed twice through the real daemon,
// with the package's directory modes and real users; after each, the
// destination tree (type, mode, owner, ACLs, link targets) must be its
// golden tree. The second deployment redeploys the current revision: it
// must run every event again, not be skipped as a no-op (issue 14.3).
func TestRevisionCorpus(t *testing.T) {
	u := makeUser(t, "rbt-ubuntu")
	app := makeUser(t, "rbt-app")
	for _, c := range corpusCases() {
		t.Run(c.name, func(t *testing.T) {
			h := newHost(t, "")
			h.packagedStateDir()
			h.start()
			dest := filepath.Join(h.dir, "dest", c.name)
			var owners map[string]tarOwner
			if c.owners != nil {
				owners = c.owners(app)
			}
			bundle := filepath.Join(h.dir, c.name+".tgz")
			corpusBundle(t, c.name, bundle, map[string]string{"dest": dest, "user": u.name}, c.modes, owners)
			for i := 1; i <= 2; i++ {
				r := h.ctl("deploy", bundle, "--wait", "-o", "json")
				var d api.Deployment
				if err := json.Unmarshal([]byte(r.stdout), &d); err != nil || r.code != 0 || d.Status != api.StatusSucceeded {
					t.Fatalf("deployment %d: exit %d %v\n%s\n%s", i, r.code, err, r.stdout, r.stderr)
				}
				if d.NoOp {
					t.Fatalf("deployment %d was a no-op", i)
				}
				if i == 2 && !hasStep(&d, "ApplicationStop", api.StepSucceeded) && hasScripts(c.name, "ApplicationStop") {
					t.Errorf("the redeployment did not run the current revision's ApplicationStop: %+v", d.Steps)
				}
				want := append([]string{}, c.warnings...)
				if i == 2 {
					want = append(want, c.second...)
				}
				all := strings.Join(d.Warnings, "\n")
				for _, w := range want {
					if !strings.Contains(all, w) {
						t.Errorf("deployment %d: warnings lack %q:\n%s", i, w, all)
					}
				}
				if show := h.ctl("show", d.ID); !strings.Contains(show.stdout, "STEPS") || (len(want) > 0 && !strings.Contains(show.stdout, "warning: ")) {
					t.Errorf("agentctl show:\n%s", show.stdout)
				}
				logs := h.ctl("logs", d.ID).stdout
				for _, l := range c.logs {
					if !strings.Contains(logs, l) {
						t.Errorf("deployment %d: logs lack %q:\n%s", i, l, logs)
					}
				}
				if c.check != nil {
					c.check(t, h, dest, u)
				}
				compareGolden(t, c.name, treeLines(t, dest))
			}
		})
	}
}

func hasStep(d *api.Deployment, name string, status api.StepStatus) bool {
	for _, s := range d.Steps {
		if s.Name == name && s.Status == status {
			return true
		}
	}
	return false
}

// hasScripts reports whether the corpus revision's appspec has scripts
// for event.
func hasScripts(name, event string) bool {
	b, _ := os.ReadFile(repoPath("testdata", "revisions", name, "revision", "appspec.yml"))
	return strings.Contains(string(b), "  "+event+":")
}

// checkStateUnreadable: a runas user reaches their revision, and nothing
// else of the agent's state: not the journal, not the hook logs, not the
// downloads or the inbox, not the listing of the state directory or of the
// releases, not the releases' records (issue 14.1).
func checkStateUnreadable(t *testing.T, h *host, u testUser) {
	t.Helper()
	var recs []string
	releases, _ := filepath.Glob(filepath.Join(h.stateDir, "releases", "*", "release.json"))
	recs = append(recs, releases...)
	manifests, _ := filepath.Glob(filepath.Join(h.stateDir, "releases", "*", "install.manifest"))
	recs = append(recs, manifests...)
	logs, _ := filepath.Glob(filepath.Join(h.stateDir, "logs", "*", "*.log"))
	if len(releases) == 0 || len(logs) == 0 {
		t.Fatalf("nothing to check: releases %v logs %v", releases, logs)
	}
	for _, p := range append(append([]string{filepath.Join(h.stateDir, "journal.db")}, recs...), logs...) {
		if out, err := runAs(t, u, "/bin/cat", p); err == nil {
			t.Errorf("%s reads %s: %.80q", u.name, p, out)
		}
	}
	for _, d := range []string{h.stateDir, filepath.Join(h.stateDir, "releases"), filepath.Join(h.stateDir, "logs"), filepath.Join(h.stateDir, "downloads")} {
		if out, err := runAs(t, u, "/bin/ls", d); err == nil {
			t.Errorf("%s lists %s: %q", u.name, d, out)
		}
	}
}
