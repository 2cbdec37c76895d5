package packaging_test

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// unitFile parses a systemd unit: section -> key -> values in order.
func unitFile(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	u := map[string]map[string][]string{}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(readFile(t, path)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s: not a key=value line in a section: %q", path, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	return u
}

const unitPath = "packaging/systemd/rollback-agent.service"

// TestUnitDirectives: what the design asks of the unit (Type=notify, watchdog, exit 78 not restarted).
func TestUnitDirectives(t *testing.T) {
	root := repoRoot(t)
	u := unitFile(t, filepath.Join(root, unitPath))
	want := map[string]map[string]string{
		"Unit": {"Wants": "network-online.target", "After": "network-online.target"},
		"Service": {
			"Type": "notify", "NotifyAccess": "main", "Restart": "on-failure", "RestartPreventExitStatus": "78",
			"KillMode": "process", "RuntimeDirectory": "rollback-agent", "RuntimeDirectoryMode": "0750",
			"StateDirectory": "rollback-agent", "ConfigurationDirectory": "rollback-agent",
			"ExecStart": "/usr/bin/rollback-agent --config /etc/rollback-agent/agent.yaml",
			"OOMPolicy": "continue", "LockPersonality": "yes", "SystemCallArchitectures": "native",
		},
		"Install": {"WantedBy": "multi-user.target"},
	}
	for section, kv := range want {
		for k, v := range kv {
			got := u[section][k]
			if len(got) == 0 || !strings.Contains(" "+strings.Join(got, " ")+" ", " "+v+" ") {
				t.Errorf("[%s] %s = %q, want %q", section, k, got, v)
			}
		}
	}
	if ws := u["Service"]["WatchdogSec"]; len(ws) != 1 || !regexp.MustCompile(`^[1-9][0-9]*s$`).MatchString(ws[0]) {
		t.Errorf("WatchdogSec = %q, want a number of seconds", ws)
	}
	for _, after := range u["Unit"]["After"] {
		if strings.Contains(after, "cloud-final") || strings.Contains(after, "cloud-init") {
			t.Errorf("After=%s: install.sh starts the unit from cloud-final; it would wait on itself", after)
		}
	}
	// Directives that need a private mount namespace (or would cripple
	// hooks) must not be there, and the header must say why each is not.
	header := readFile(t, filepath.Join(root, unitPath))
	header = header[:strings.Index(header, "[Unit]")]
	for _, d := range []string{"ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "ProtectKernelTunables",
		"ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "ProtectProc", "PrivateMounts",
		"NoNewPrivileges", "RestrictSUIDSGID", "CapabilityBoundingSet", "RestrictNamespaces", "RestrictAddressFamilies",
		"MemoryDenyWriteExecute", "PrivateNetwork", "DevicePolicy", "ProtectHostname", "PrivateUsers", "RestrictRealtime"} {
		if _, set := u["Service"][d]; set {
			t.Errorf("%s is set: it breaks hooks running as root or the mounts of volume restores", d)
		}
		if !strings.Contains(header, d) {
			t.Errorf("the unit's header does not say why %s is left out", d)
		}
	}
}

// TestUnitVerifies runs systemd-analyze verify on the unit as the packages
// install it, in a root that holds the daemon at its ExecStart path, the
// distribution's units and /bin/kill (ExecReload); then shows that verify
// fails when the binary is missing, so the check can fail.
func TestUnitVerifies(t *testing.T) {
	need(t, "systemd-analyze", "go")
	root := repoRoot(t)
	r := t.TempDir()
	for _, l := range []string{"bin", "sbin", "lib", "lib64"} {
		if target, err := os.Readlink("/" + l); err == nil {
			if err := os.Symlink(target, filepath.Join(r, l)); err != nil {
				t.Fatal(err)
			}
		}
	}
	hostUnits := "/usr/lib/systemd/system"
	entries, err := os.ReadDir(hostUnits)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Type().IsRegular() {
			copyFile(t, filepath.Join(hostUnits, e.Name()), filepath.Join(r, hostUnits, e.Name()), 0o644)
		}
	}
	kill := run(t, nil, "", "sh", "-c", "command -v kill >/dev/null; readlink -f /bin/kill")
	copyFile(t, strings.TrimSpace(kill), filepath.Join(r, "usr/bin/kill"), 0o755)
	agent := filepath.Join(r, "usr/bin/rollback-agent")
	buildBinary(t, root, "./cmd/agent", agent)
	copyFile(t, filepath.Join(root, unitPath), filepath.Join(r, hostUnits, "rollback-agent.service"), 0o644)

	verify := func() (string, error) {
		out, errOut, err := runErr(nil, "", "systemd-analyze", "verify", "--root="+r, filepath.Join(hostUnits, "rollback-agent.service"))
		return strings.TrimSpace(out + errOut), err
	}
	if out, err := verify(); err != nil || out != "" {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	if err := os.Remove(agent); err != nil {
		t.Fatal(err)
	}
	if out, err := verify(); err == nil || !strings.Contains(out, "/usr/bin/rollback-agent") {
		t.Errorf("verify passed without the daemon at its ExecStart path: %v %s", err, out)
	}
}

// TestSysusersAndTmpfiles applies the shipped sysusers.d and tmpfiles.d
// entries to a scratch root with the real tools.
func TestSysusersAndTmpfiles(t *testing.T) {
	need(t, "systemd-sysusers", "systemd-tmpfiles")
	root := repoRoot(t)
	r := t.TempDir()
	copyFile(t, filepath.Join(root, "packaging/systemd/rollback-agent.sysusers"), filepath.Join(r, "usr/lib/sysusers.d/rollback-agent.conf"), 0o644)
	copyFile(t, filepath.Join(root, "packaging/systemd/rollback-agent.tmpfiles"), filepath.Join(r, "usr/lib/tmpfiles.d/rollback-agent.conf"), 0o644)
	writeFile(t, filepath.Join(r, "etc/group"), "", 0o644)
	writeFile(t, filepath.Join(r, "etc/passwd"), "", 0o644)
	run(t, nil, "", "systemd-sysusers", "--root="+r)
	if g := readFile(t, filepath.Join(r, "etc/group")); !regexp.MustCompile(`(?m)^rollback-agent:x:\d+:$`).MatchString(g) {
		t.Errorf("/etc/group after sysusers:\n%s", g)
	}
	run(t, nil, "", "systemd-tmpfiles", "--root="+r, "--create")
	for d, mode := range map[string]os.FileMode{"var/lib/rollback-agent": 0o711, "var/lib/rollback-agent/inbox": 0o700} {
		fi, err := os.Stat(filepath.Join(r, d))
		if err != nil || !fi.IsDir() || fi.Mode().Perm() != mode {
			t.Errorf("/%s: %v %v, want a %04o directory", d, fi, err, mode)
		}
	}
	// The unit's StateDirectoryMode agrees with tmpfiles.d.
	if u := unitFile(t, filepath.Join(root, unitPath)); strings.Join(u["Service"]["StateDirectoryMode"], "") != "0711" {
		t.Errorf("StateDirectoryMode = %q, tmpfiles.d says 0711", u["Service"]["StateDirectoryMode"])
	}
}
