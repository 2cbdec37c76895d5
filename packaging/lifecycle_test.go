package packaging_test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// rebuild packages the binaries of b again as release b.release+".1" (newer
// than b whatever the commit count in b.release is), from a
// copy of packaging/ whose default agent.yaml differs: an upgrade that
// must keep the operator's config and leave the new default beside it.
func rebuild(t *testing.T, root string, b built, format string) string {
	t.Helper()
	src := t.TempDir()
	run(t, nil, "", "cp", "-a", filepath.Join(root, "packaging"), src)
	cfg := filepath.Join(src, "packaging/config/agent.yaml")
	writeFile(t, cfg, readFile(t, cfg)+"# a newer default\n", 0o644)
	out := t.TempDir()
	goarch := strings.TrimSpace(run(t, nil, root, "go", "env", "GOARCH"))
	env := []string{"BIN_DIR=" + filepath.Join(b.dist, "bin"), "GOARCH=" + goarch, "SOURCE_DATE_EPOCH=0",
		"PKG_VERSION=" + b.version, "PKG_RELEASE=" + b.release + ".1"}
	run(t, env, src, filepath.Join(root, "bin", "nfpm"), "package", "--config", "packaging/rpm/nfpm.yaml", "--packager", format, "--target", out+"/")
	if format == "rpm" {
		return glob1(t, filepath.Join(out, "*.rpm"))
	}
	return glob1(t, filepath.Join(out, "*.deb"))
}

// simulateSystemd makes the scriptlets believe systemd runs (they only
// reload and restart then) and marks the agent as running.
func simulateSystemd(t *testing.T, r string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(r, "run/systemd/system"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(r, "run/systemctl-stub/active"), "yes\n", 0o644)
}

// since returns the calls recorded after the first n.
func since(t *testing.T, r string, n int) []string {
	t.Helper()
	return stubCalls(t, r)[n:]
}

func wantCalls(t *testing.T, step string, got []string, want, notWant []string) {
	t.Helper()
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("%s: systemctl %q was not called; calls: %q", step, w, got)
		}
	}
	for _, w := range notWant {
		if slices.Contains(got, w) {
			t.Errorf("%s: systemctl %q was called; calls: %q", step, w, got)
		}
	}
}

// testRPMLifecycle installs, upgrades and erases the RPM with the real rpm
// in a scratch root, its scriptlets running chrooted with the real
// systemd-sysusers and systemd-tmpfiles.
func testRPMLifecycle(t *testing.T, root string, b built) {
	r := newRoot(t)
	rpm := func(args ...string) {
		t.Helper()
		run(t, nil, "", "rpm", append([]string{"--root", r}, args...)...)
	}
	const unit = "rollback-agent.service"

	rpm("-U", b.rpm)
	wantCalls(t, "install", stubCalls(t, r), []string{"enable " + unit}, []string{"start " + unit, "try-restart " + unit})
	checkInstalled(t, r)

	// The operator (or install.sh) writes the config and the agent runs.
	conf := filepath.Join(r, "etc/rollback-agent/agent.yaml")
	writeFile(t, conf, "application: demo\n", 0o644)
	simulateSystemd(t, r)
	n := len(stubCalls(t, r))
	rpm("-U", rebuild(t, root, b, "rpm"))
	wantCalls(t, "upgrade", since(t, r, n), []string{"daemon-reload", "try-restart " + unit}, []string{"enable " + unit, "stop " + unit, "disable " + unit})
	if got := readFile(t, conf); got != "application: demo\n" {
		t.Errorf("the upgrade replaced agent.yaml: %q", got)
	}
	if !strings.HasSuffix(readFile(t, conf+".rpmnew"), "# a newer default\n") {
		t.Error("the new default config is not left as agent.yaml.rpmnew")
	}

	state := filepath.Join(r, "var/lib/rollback-agent/journal.db")
	writeFile(t, state, "the journal", 0o600)
	n = len(stubCalls(t, r))
	rpm("-e", "rollback-agent")
	wantCalls(t, "erase", since(t, r, n), []string{"stop " + unit, "disable " + unit, "daemon-reload"}, nil)
	if _, err := os.Stat(filepath.Join(r, "usr/bin/rollback-agent")); !os.IsNotExist(err) {
		t.Errorf("rpm -e left /usr/bin/rollback-agent (%v)", err)
	}
	if got, err := os.ReadFile(state); err != nil || string(got) != "the journal" {
		t.Errorf("rpm -e touched /var/lib/rollback-agent: %v", err)
	}
	if _, err := os.Stat(conf + ".rpmsave"); err != nil {
		t.Errorf("the edited agent.yaml was not kept as .rpmsave: %v", err)
	}
}

// testDebLifecycle does the same with the real dpkg.
func testDebLifecycle(t *testing.T, root string, b built) {
	r := newRoot(t)
	dpkg := func(args ...string) {
		t.Helper()
		run(t, nil, "", "dpkg", append([]string{"--root=" + r, "--force-confdef", "--force-confold"}, args...)...)
	}
	const unit = "rollback-agent.service"

	dpkg("-i", b.deb)
	wantCalls(t, "install", stubCalls(t, r), []string{"enable " + unit}, []string{"start " + unit, "try-restart " + unit})
	checkInstalled(t, r)

	conf := filepath.Join(r, "etc/rollback-agent/agent.yaml")
	writeFile(t, conf, "application: demo\n", 0o644)
	simulateSystemd(t, r)
	n := len(stubCalls(t, r))
	dpkg("-i", rebuild(t, root, b, "deb"))
	wantCalls(t, "upgrade", since(t, r, n), []string{"daemon-reload", "try-restart " + unit}, []string{"enable " + unit, "stop " + unit, "disable " + unit})
	if got := readFile(t, conf); got != "application: demo\n" {
		t.Errorf("the upgrade replaced agent.yaml: %q", got)
	}

	state := filepath.Join(r, "var/lib/rollback-agent/journal.db")
	writeFile(t, state, "the journal", 0o600)
	n = len(stubCalls(t, r))
	dpkg("--purge", "rollback-agent")
	wantCalls(t, "purge", since(t, r, n), []string{"stop " + unit, "disable " + unit, "daemon-reload"}, nil)
	if got, err := os.ReadFile(state); err != nil || string(got) != "the journal" {
		t.Errorf("dpkg --purge touched /var/lib/rollback-agent: %v", err)
	}
}

// checkInstalled: the scriptlets made the group and the state directory.
func checkInstalled(t *testing.T, r string) {
	t.Helper()
	if group := readFile(t, filepath.Join(r, "etc/group")); !regexp.MustCompile(`(?m)^rollback-agent:x:\d+:`).MatchString(group) {
		t.Errorf("no rollback-agent group after install:\n%s", group)
	}
	for d, mode := range map[string]os.FileMode{"var/lib/rollback-agent": 0o711, "var/lib/rollback-agent/inbox": 0o700} {
		fi, err := os.Stat(filepath.Join(r, d))
		if err != nil || fi.Mode().Perm() != mode {
			t.Errorf("/%s after install: %v %v (want a %04o directory from tmpfiles.d)", d, fi, err, mode)
		}
	}
}
