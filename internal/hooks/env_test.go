package hooks

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// systemdVars are what the service manager addresses to the agent alone.
func systemdVars() []string {
	return []string{"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"}
}

func setSystemdVars(t *testing.T) {
	for _, k := range systemdVars() {
		t.Setenv(k, "from-systemd-"+k)
	}
}

func TestBaseEnvDropsSystemdVars(t *testing.T) {
	setSystemdVars(t)
	t.Setenv("HOOKS_TEST_KEEP", "kept")
	env := BaseEnv()
	for _, kv := range env {
		if slices.Contains(systemdVars(), envKey(kv)) {
			t.Errorf("BaseEnv contains %s", kv)
		}
	}
	if !slices.Contains(env, "HOOKS_TEST_KEEP=kept") {
		t.Error("BaseEnv lost an ordinary variable")
	}
}

func TestMergeEnvLaterWinsOnce(t *testing.T) {
	got := mergeEnv([]string{"A=1", "B=2", "A=3"}, []string{"C=4", "B=5"}, []string{"A=6", "D=x=y"})
	want := []string{"A=6", "B=5", "C=4", "D=x=y"}
	if !slices.Equal(got, want) {
		t.Fatalf("mergeEnv = %q, want %q", got, want)
	}
}

// environOf parses a NUL-separated environment block (/proc/PID/environ)
// and fails on a key that appears twice.
func environOf(t *testing.T, path string) map[string]string {
	t.Helper()
	env := make(map[string]string)
	for _, kv := range strings.Split(strings.TrimSuffix(readFile(t, path), "\x00"), "\x00") {
		k, v, _ := strings.Cut(kv, "=")
		if _, dup := env[k]; dup {
			t.Errorf("%s appears more than once in the hook's environment", k)
		}
		env[k] = v
	}
	return env
}

func TestRunEnvironment(t *testing.T) {
	setSystemdVars(t)
	t.Setenv("HOOKS_TEST_BASE", "from-agent")
	t.Setenv("HOOKS_TEST_OVERRIDE", "from-agent")
	dir := revisionDir(t)
	out := filepath.Join(dir, "environ")
	// /proc/$$/environ is the block execve received, duplicates included,
	// which `env` would hide.
	writeScript(t, dir, "env.sh", "#!/bin/sh\ncat /proc/$$/environ > '"+out+"'\n", 0o755)
	s := baseSpec(t, dir, "env.sh")
	s.Env = []string{
		"LIFECYCLE_EVENT=BeforeInstall",
		"DEPLOYMENT_ID=d-FIRST",
		"APPLICATION_NAME=my app",
		"DEPLOYMENT_GROUP_NAME=group=blue",
		"DEPLOYMENT_GROUP_ID=7c0e9c7a-0000-4000-8000-000000000001",
		"BUNDLE_BUCKET=bucket",
		"BUNDLE_KEY=path/to/bundle.zip",
		"BUNDLE_ETAG=\"abc\"",
		"HOOKS_TEST_OVERRIDE=from-spec",
		"DEPLOYMENT_ID=d-AB1CDEF23",
	}
	wantCode(t, Run(context.Background(), s), Succeeded)
	env := environOf(t, out)
	want := map[string]string{
		"LIFECYCLE_EVENT":       "BeforeInstall",
		"DEPLOYMENT_ID":         "d-AB1CDEF23",
		"APPLICATION_NAME":      "my app",
		"DEPLOYMENT_GROUP_NAME": "group=blue",
		"DEPLOYMENT_GROUP_ID":   "7c0e9c7a-0000-4000-8000-000000000001",
		"BUNDLE_BUCKET":         "bucket",
		"BUNDLE_KEY":            "path/to/bundle.zip",
		"BUNDLE_ETAG":           "\"abc\"",
		"HOOKS_TEST_OVERRIDE":   "from-spec",
		"HOOKS_TEST_BASE":       "from-agent",
		"PATH":                  os.Getenv("PATH"),
	}
	for k, v := range want {
		if got, ok := env[k]; !ok || got != v {
			t.Errorf("%s = %q (present %v), want %q", k, got, ok, v)
		}
	}
	for _, k := range systemdVars() {
		if v, ok := env[k]; ok {
			t.Errorf("%s=%s leaked into the hook", k, v)
		}
	}
}

func TestRunAsNobody(t *testing.T) {
	pw := passwdEntry(t, "nobody")
	dir := revisionDir(t)
	outDir := filepath.Join(dir, "out")
	if err := os.Mkdir(outDir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(outDir, 0o777); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(outDir, "who")
	writeScript(t, dir, "scripts/who.sh", `#!/bin/sh
{
echo "uid=$(id -u)"
echo "gid=$(id -g)"
echo "groups=$(id -G)"
echo "home=$HOME"
echo "user=$USER"
echo "logname=$LOGNAME"
echo "shell=$SHELL"
echo "path=$PATH"
echo "event=$LIFECYCLE_EVENT"
} > '`+out+`'
echo "written-as-nobody"
`, 0o755)
	t.Setenv("HOME", "/root")
	t.Setenv("USER", "root")
	s := baseSpec(t, dir, "scripts/who.sh")
	s.RunAs = "nobody"
	s.Env = []string{"LIFECYCLE_EVENT=AfterInstall"}
	res := Run(context.Background(), s)
	wantCode(t, res, Succeeded)
	got := make(map[string]string)
	for _, line := range strings.Split(strings.TrimSpace(readFile(t, out)), "\n") {
		k, v, _ := strings.Cut(line, "=")
		got[k] = v
	}
	want := map[string]string{
		"uid": "65534", "gid": pw[3], "groups": pw[3],
		"home": pw[5], "shell": pw[6], "user": "nobody", "logname": "nobody",
		"path":  "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"event": "AfterInstall",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	// The log is root's 0640 file; the hook writes to it through the
	// descriptor the agent opened.
	if !strings.Contains(readFile(t, s.LogPath), "written-as-nobody") {
		t.Error("output of the runas script is missing from the log")
	}
}

func TestRunAsFailureNamesUser(t *testing.T) {
	dir := revisionDir(t)
	writeScript(t, dir, "fail.sh", "#!/bin/sh\nexit 4\n", 0o755)
	s := baseSpec(t, dir, "fail.sh")
	s.RunAs = "nobody"
	res := Run(context.Background(), s)
	wantCode(t, res, ScriptFailed)
	if want := "Script at specified location: fail.sh run as user nobody failed with exit code 4"; res.Message != want {
		t.Fatalf("Message = %q, want %q", res.Message, want)
	}
}

func TestRunAsUnknownUser(t *testing.T) {
	dir := revisionDir(t)
	marker := filepath.Join(dir, "ran")
	writeScript(t, dir, "x.sh", "#!/bin/sh\ntouch '"+marker+"'\n", 0o755)
	s := baseSpec(t, dir, "x.sh")
	s.RunAs = "no-such-user-rbagent"
	res := Run(context.Background(), s)
	wantCode(t, res, UnknownError)
	if !strings.Contains(res.Message, `no user "no-such-user-rbagent"`) {
		t.Fatalf("Message = %q", res.Message)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("script ran for an unknown user")
	}
}

func TestRunAsCannotReachScript(t *testing.T) {
	dir := revisionDir(t)
	private := filepath.Join(dir, "private")
	if err := os.Mkdir(private, 0o700); err != nil {
		t.Fatal(err)
	}
	path := writeScript(t, private, "x.sh", "#!/bin/sh\nexit 0\n", 0o755)
	if err := os.Chmod(private, 0o700); err != nil {
		t.Fatal(err)
	}
	s := baseSpec(t, dir, "private/x.sh")
	s.RunAs = "nobody"
	res := Run(context.Background(), s)
	wantCode(t, res, ScriptNotExecutable)
	if !strings.Contains(res.Message, "user nobody cannot execute "+path+": check the permissions of the revision directory") {
		t.Fatalf("Message = %q", res.Message)
	}
}

func TestLoginShell(t *testing.T) {
	passwd := filepath.Join(t.TempDir(), "passwd")
	content := "root:x:0:0:root:/root:/bin/bash\n" +
		"app:x:1000:1000:App,,,:/home/app:/bin/zsh\n" +
		"blank:x:1001:1001::/home/blank:\n" +
		"short:x:1002\n"
	if err := os.WriteFile(passwd, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"app": "/bin/zsh", "root": "/bin/bash", "blank": "/bin/sh", "short": "/bin/sh", "ldapuser": "/bin/sh",
	} {
		got, err := loginShell(passwd, name)
		if err != nil || got != want {
			t.Errorf("loginShell(%q) = %q, %v; want %q", name, got, err, want)
		}
	}
}

func TestParseStat(t *testing.T) {
	state, pgrp, err := parseStat([]byte("4242 (we ird) (name)) S 1 4240 4240 0 -1 4194560 0 0"))
	if err != nil || state != 'S' || pgrp != 4240 {
		t.Fatalf("parseStat = %c, %d, %v; want S, 4240", state, pgrp, err)
	}
	if _, _, err := parseStat([]byte("garbage")); err == nil {
		t.Fatal("parseStat accepted garbage")
	}
}
