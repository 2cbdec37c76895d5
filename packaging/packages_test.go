package packaging_test

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// built is one `make rpm deb` into its own directory.
type built struct {
	dist, rpm, deb   string
	version, release string // what packaging/version.sh said
}

// buildPackages runs the Makefile's own targets, as a release would.
func buildPackages(t *testing.T, root, dist string) built {
	t.Helper()
	run(t, nil, root, "make", "--no-print-directory", "rpm", "deb", "DIST="+dist)
	vr := strings.Fields(run(t, nil, root, "packaging/version.sh"))
	if len(vr) != 2 {
		t.Fatalf("packaging/version.sh printed %q", vr)
	}
	return built{
		dist: dist, rpm: glob1(t, filepath.Join(dist, "rollback-agent-*.rpm")),
		deb: glob1(t, filepath.Join(dist, "rollback-agent_*.deb")), version: vr[0], release: vr[1],
	}
}

// The files of both packages: mode, and whether it is a config file.
type file struct {
	mode   string
	config bool
}

func wantFiles(format string) map[string]file {
	f := map[string]file{
		"/usr/bin/rollback-agent":                               {"-rwxr-xr-x", false},
		"/usr/bin/agentctl":                                     {"-rwxr-xr-x", false},
		"/usr/lib/systemd/system/rollback-agent.service":        {"-rw-r--r--", false},
		"/usr/lib/sysusers.d/rollback-agent.conf":               {"-rw-r--r--", false},
		"/usr/lib/tmpfiles.d/rollback-agent.conf":               {"-rw-r--r--", false},
		"/etc/rollback-agent":                                   {"drwxr-xr-x", false},
		"/etc/rollback-agent/agent.yaml":                        {"-rw-r--r--", true},
		"/usr/lib/rollback-agent":                               {"drwxr-xr-x", false},
		"/usr/lib/rollback-agent/package-hook":                  {"-rwxr-xr-x", false},
		"/usr/lib/rollback-agent/agentctl-aws":                  {"-rwxr-xr-x", false},
		"/usr/share/doc/rollback-agent":                         {"drwxr-xr-x", false},
		"/usr/share/doc/rollback-agent/instance-policy.json":    {"-rw-r--r--", false},
		"/usr/share/doc/rollback-agent/workstation-policy.json": {"-rw-r--r--", false},
	}
	switch format {
	case "rpm":
		f["/etc/dnf/libdnf5-plugins/actions.d/rollback-agent.actions"] = file{"-rw-r--r--", true}
		f["/etc/dnf/plugins/pre-transaction-actions.d/rollback-agent.action"] = file{"-rw-r--r--", true}
	case "deb":
		f["/etc/apt/apt.conf.d/80rollback-agent"] = file{"-rw-r--r--", true}
	}
	return f
}

// TestPackages builds the packages once with `make rpm deb` and checks
// them from every side: files, modes, config marking, scriptlets, versions,
// reproducibility, then installs, upgrades and removes the RPM in a
// scratch root with the real rpm, and runs scripts/install.sh twice.
func TestPackages(t *testing.T) {
	need(t, "make", "git", "rpm", "dpkg-deb", "dpkg")
	root := repoRoot(t)
	b := buildPackages(t, root, t.TempDir())

	t.Run("RPMFiles", func(t *testing.T) {
		out := run(t, nil, "", "rpm", "-qp", "--qf", `[%{FILEFLAGS:fflags} %{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILENAMES}\n]`, b.rpm)
		got := map[string]file{}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			// "cn -rw-r--r-- root:root /etc/rollback-agent/agent.yaml"; flags may be empty.
			fields := strings.Fields(line)
			flags := ""
			if len(fields) == 4 {
				flags, fields = fields[0], fields[1:]
			}
			if fields[1] != "root:root" {
				t.Errorf("%s is owned by %s", fields[2], fields[1])
			}
			if strings.Contains(flags, "c") && !strings.Contains(flags, "n") {
				t.Errorf("%s is %%config but not noreplace (flags %q): an upgrade would replace it", fields[2], flags)
			}
			got[fields[2]] = file{fields[0], strings.Contains(flags, "c")}
		}
		compareFiles(t, "rpm", got, wantFiles("rpm"))
		listed := strings.Fields(run(t, nil, "", "rpm", "-qlp", b.rpm))
		if len(listed) != len(got) {
			t.Errorf("rpm -qlp lists %d paths, the file query %d: %q", len(listed), len(got), listed)
		}
		cfg := strings.Fields(run(t, nil, "", "rpm", "-qp", "--configfiles", b.rpm))
		if !slices.Contains(cfg, "/etc/rollback-agent/agent.yaml") {
			t.Errorf("rpm --configfiles = %v", cfg)
		}
	})

	t.Run("RPMScriptlets", func(t *testing.T) {
		s := run(t, nil, "", "rpm", "-qp", "--scripts", b.rpm)
		post := section(s, "postinstall scriptlet")
		preun := section(s, "preuninstall scriptlet")
		postun := section(s, "postuninstall scriptlet")
		for _, c := range []struct{ name, text, want string }{
			{"%post", post, `if [ "$1" -eq 1 ]; then`},
			{"%post", post, `systemctl enable "$unit"`},
			{"%post", post, `systemctl try-restart "$unit"`},
			{"%post", post, "systemd-sysusers /usr/lib/sysusers.d/rollback-agent.conf"},
			{"%post", post, "systemd-tmpfiles --create /usr/lib/tmpfiles.d/rollback-agent.conf"},
			{"%preun", preun, `if [ "$1" -eq 0 ]`},
			{"%preun", preun, `systemctl stop "$unit"`},
			{"%preun", preun, `systemctl disable "$unit"`},
			{"%postun", postun, "systemctl daemon-reload"},
		} {
			if !strings.Contains(c.text, c.want) {
				t.Errorf("%s lacks %q:\n%s", c.name, c.want, c.text)
			}
		}
		if removesFiles(s) {
			t.Errorf("a scriptlet removes files:\n%s", s)
		}
	})

	t.Run("DebFiles", func(t *testing.T) {
		out := run(t, nil, "", "dpkg-deb", "-c", b.deb)
		conffiles := run(t, nil, "", "sh", "-c", `dpkg-deb --ctrl-tarfile "$0" | tar -xO ./conffiles`, b.deb)
		got := map[string]file{}
		want := wantFiles("deb")
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			// "-rw-r--r-- root/root 342 2026-11-25 23:22 ./etc/apt/apt.conf.d/80rollback-agent"
			fields := strings.Fields(line)
			p := strings.TrimSuffix(strings.TrimPrefix(fields[5], "."), "/")
			if fields[1] != "root/root" {
				t.Errorf("%s is owned by %s", p, fields[1])
			}
			if _, ours := want[p]; !ours && fields[0][0] == 'd' {
				continue // parent directories such as /usr/lib
			}
			got[p] = file{fields[0], slices.Contains(strings.Fields(conffiles), p)}
		}
		compareFiles(t, "deb", got, want)
	})

	t.Run("DebControlAndMaintainerScripts", func(t *testing.T) {
		info := run(t, nil, "", "dpkg-deb", "-I", b.deb)
		for _, want := range []string{"Package: rollback-agent", "Version: " + b.version + "-" + b.release, "postinst", "prerm", "postrm"} {
			if !strings.Contains(info, want) {
				t.Errorf("dpkg-deb -I lacks %q:\n%s", want, info)
			}
		}
		ctrl := t.TempDir()
		run(t, nil, "", "dpkg-deb", "-e", b.deb, ctrl)
		for name, wants := range map[string][]string{
			"postinst": {`if [ -z "$2" ]; then`, `systemctl enable "$unit"`, `systemctl try-restart "$unit"`},
			"prerm":    {`if [ "$1" = remove ]`, `systemctl stop "$unit"`, `systemctl disable "$unit"`},
			"postrm":   {"daemon-reload"},
		} {
			text := readFile(t, filepath.Join(ctrl, name))
			for _, w := range wants {
				if !strings.Contains(text, w) {
					t.Errorf("%s lacks %q", name, w)
				}
			}
			if removesFiles(text) {
				t.Errorf("%s removes files:\n%s", name, text)
			}
		}
	})

	t.Run("Versions", func(t *testing.T) {
		if got := run(t, nil, "", "rpm", "-qp", "--qf", "%{VERSION}-%{RELEASE}", b.rpm); got != b.version+"-"+b.release {
			t.Errorf("rpm version %q, packaging/version.sh says %s-%s", got, b.version, b.release)
		}
		describe := strings.TrimSpace(run(t, nil, root, "git", "describe", "--tags", "--always", "--dirty"))
		commit := strings.TrimSpace(run(t, nil, root, "git", "rev-parse", "HEAD"))
		goVersion := strings.TrimSpace(run(t, nil, root, "go", "env", "GOVERSION"))
		want := describe + " (commit " + commit + ", " + goVersion + ")"
		if got := run(t, nil, "", filepath.Join(b.dist, "bin", "rollback-agent"), "--version"); got != "rollback-agent "+want+"\n" {
			t.Errorf("rollback-agent --version = %q, want %q", got, "rollback-agent "+want)
		}
		// No agent answers on this socket: agentctl prints its own version.
		got, _, _ := runErr([]string{"ROLLBACK_AGENT_SOCKET=" + filepath.Join(t.TempDir(), "none.sock")}, "", filepath.Join(b.dist, "bin", "agentctl"), "version")
		if !strings.HasPrefix(got, "agentctl "+want+"\n") {
			t.Errorf("agentctl version = %q, want it to start with %q", got, "agentctl "+want)
		}
	})

	t.Run("Reproducible", func(t *testing.T) {
		again := buildPackages(t, root, t.TempDir())
		for _, pair := range [][2]string{{b.rpm, again.rpm}, {b.deb, again.deb},
			{filepath.Join(b.dist, "bin", "rollback-agent"), filepath.Join(again.dist, "bin", "rollback-agent")}} {
			if h1, h2 := sha256File(t, pair[0]), sha256File(t, pair[1]); h1 != h2 {
				t.Errorf("two builds differ: %s %s, %s %s", pair[0], h1, pair[1], h2)
			}
		}
	})

	t.Run("RPMLifecycle", func(t *testing.T) { testRPMLifecycle(t, root, b) })
	t.Run("DebLifecycle", func(t *testing.T) { testDebLifecycle(t, root, b) })
	t.Run("InstallScriptTwice", func(t *testing.T) { testInstallTwice(t, root, b) })
	t.Run("InstallScriptFromS3AndHTTPS", func(t *testing.T) { testInstallFromRemote(t, root, b) })
}

// removesFiles finds an rm or rmdir command in a script.
func removesFiles(script string) bool {
	return regexp.MustCompile(`(^|[\s;&|(])rm(dir)?\s`).MatchString(script)
}

// section returns one scriptlet of `rpm -qp --scripts` output.
func section(all, header string) string {
	i := strings.Index(all, header)
	if i < 0 {
		return ""
	}
	rest := all[i+len(header):]
	if j := strings.Index(rest, " scriptlet (using"); j >= 0 {
		if k := strings.LastIndex(rest[:j], "\n"); k >= 0 {
			rest = rest[:k]
		}
	}
	return rest
}

func compareFiles(t *testing.T, format string, got, want map[string]file) {
	t.Helper()
	for p, w := range want {
		g, ok := got[p]
		switch {
		case !ok:
			t.Errorf("%s: %s is missing", format, p)
		case g != w:
			t.Errorf("%s: %s is %+v, want %+v", format, p, g, w)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("%s: unexpected %s", format, p)
		}
		if strings.HasPrefix(p, "/var/lib/rollback-agent") {
			t.Errorf("%s: ships %s: removal would delete the state", format, p)
		}
	}
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
