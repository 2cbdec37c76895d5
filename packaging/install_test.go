package packaging_test

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/goccy/go-yaml"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/config"
	"github.com/rollback-agent/rollback-agent/internal/testbed"
)

// fakeAgent answers the socket API's GET /v1/status the way a starting and
// then ready daemon does, so install.sh's wait runs the real agentctl.
type fakeAgent struct {
	socket   string
	requests atomic.Int32
	starting int32 // the first this many requests get 503 starting
}

func startFakeAgent(t *testing.T, starting int32) *fakeAgent {
	t.Helper()
	f := &fakeAgent{starting: starting}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+api.PathStatus, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if f.requests.Add(1) <= f.starting {
			w.WriteHeader(http.StatusServiceUnavailable)
			_ = json.NewEncoder(w).Encode(api.ErrorBody{Error: "starting: reading the identity", Code: api.CodeStarting})
			return
		}
		_ = json.NewEncoder(w).Encode(api.Status{SchemaVersion: api.SchemaVersion, Application: "demo", State: api.StateIdle, Summary: "idle: ready for deployments"})
	})
	mux.HandleFunc("GET "+api.PathDoctor, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(api.DoctorReport{SchemaVersion: api.SchemaVersion, Checks: []api.DoctorCheck{
			{Name: "ec2:CreateSnapshots", Result: api.DoctorFail, Detail: "missing grant: ec2:CreateSnapshots on arn:aws:ec2:us-east-1:123456789012:instance/i-0123", Fix: "grant it"},
		}})
	})
	f.socket = serveUnix(t, mux)
	return f
}

// serveUnix serves h on a new unix socket until the test ends; the path is
// short, as unix socket paths must be.
func serveUnix(t *testing.T, h http.Handler) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ra-sock-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("fake agent: %v", err)
		}
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return sock
}

// testInstallTwice runs scripts/install.sh against a scratch root with the
// real rpm (scriptlets chrooted), the installed rollback-agent checking the
// config and the installed agentctl waiting for the (fake) agent; only
// systemctl is a stub. The second run must change nothing: the same tree,
// and no systemctl call but queries.
func testInstallTwice(t *testing.T, root string, b built) {
	r := newRoot(t)
	agent := startFakeAgent(t, 2)
	env := []string{"ROOT=" + r, "SYSTEMCTL=" + filepath.Join(r, "usr/bin/systemctl"), "ROLLBACK_AGENT_SOCKET=" + agent.socket,
		"ROLLBACK_AGENT_APPLICATION=demo"}
	script := filepath.Join(root, "scripts/install.sh")
	args := []string{"--package", b.rpm, "--channel", "s3://releases/apps/demo/channels/prod.json", "--ladder", "revision,volumes", "--package-managers", "--wait", "60",
		"--alarm", "demo-Errors,it's down"}

	_, log1, err := runErr(env, "", script, args...)
	if err != nil {
		t.Fatalf("first run: %v\n%s", err, log1)
	}
	for _, want := range []string{"installing rollback-agent-", "wrote " + r + "/etc/rollback-agent/agent.yaml", "starting rollback-agent.service", "rollback-agent answers:", "idle: ready for deployments",
		// The doctor's report, printed: its failure does not fail the install.
		"agentctl doctor found problems", "missing grant: ec2:CreateSnapshots on arn:aws:ec2:us-east-1:123456789012:instance/i-0123", "fix: grant it"} {
		if !strings.Contains(log1, want) {
			t.Errorf("first run did not say %q:\n%s", want, log1)
		}
	}
	if n := agent.requests.Load(); n < 3 {
		t.Errorf("install.sh asked for the status %d times; it must wait through the 2 'starting' answers", n)
	}
	calls1 := stubCalls(t, r)
	wantCalls(t, "first run", calls1, []string{"enable rollback-agent.service", "start --no-block rollback-agent.service"}, []string{"restart --no-block rollback-agent.service"})
	cfg, _, err := config.Load(filepath.Join(r, "etc/rollback-agent/agent.yaml"))
	if err != nil {
		t.Fatalf("the written agent.yaml does not load: %v", err)
	}
	if cfg.Application != "demo" || cfg.Sources.Channel != "s3://releases/apps/demo/channels/prod.json" ||
		!cfg.Checkpoint.PackageManagers || fmt.Sprint(cfg.Rollback.Ladder) != "[revision volumes]" {
		t.Errorf("agent.yaml does not say what the options said: %+v", cfg)
	}
	if len(cfg.Health.Checks) != 1 || cfg.Health.Checks[0].CloudWatchAlarm == nil ||
		strings.Join(cfg.Health.Checks[0].CloudWatchAlarm.AlarmNames, "|") != "demo-Errors|it's down" {
		t.Errorf("agent.yaml does not check the alarms --alarm named: %+v", cfg.Health.Checks)
	}

	// sqlite rewrites the rpm database's shared-memory index (-shm) on a
	// read; it is no installed state, so it is the one file not compared.
	const shm = "rpmdb.sqlite-shm"
	before := tree(t, r, "var/log/systemctl-stub.log", shm)
	_, log2, err := runErr(env, "", script, args...)
	if err != nil {
		t.Fatalf("second run: %v\n%s", err, log2)
	}
	if d := diffTrees(before, tree(t, r, "var/log/systemctl-stub.log", shm)); len(d) > 0 {
		t.Errorf("the second run changed the root:\n%s", strings.Join(d, "\n"))
	}
	for _, call := range stubCalls(t, r)[len(calls1):] {
		verb := strings.Fields(call)[0]
		if verb != "is-enabled" && verb != "is-active" && verb != "is-failed" {
			t.Errorf("the second run called systemctl %s", call)
		}
	}
	for _, want := range []string{"is installed already", "is up to date", "rollback-agent answers:"} {
		if !strings.Contains(log2, want) {
			t.Errorf("second run did not say %q:\n%s", want, log2)
		}
	}

	// A changed option rewrites the config and restarts the running agent.
	n := len(stubCalls(t, r))
	args[3] = "s3://releases/apps/demo/channels/canary.json"
	if _, log3, err := runErr(env, "", script, args...); err != nil {
		t.Fatalf("third run: %v\n%s", err, log3)
	}
	wantCalls(t, "changed config", since(t, r, n), []string{"restart --no-block rollback-agent.service"}, []string{"enable rollback-agent.service"})

	// A bad config is refused before anything is written.
	conf := readFile(t, filepath.Join(r, "etc/rollback-agent/agent.yaml"))
	if _, log4, err := runErr(env, "", script, "--package", b.rpm, "--application", "no spaces allowed"); err == nil {
		t.Errorf("install.sh accepted a bad application name:\n%s", log4)
	}
	if readFile(t, filepath.Join(r, "etc/rollback-agent/agent.yaml")) != conf {
		t.Error("a refused config was written")
	}
}

// TestInstallScriptUsage: the options the docs and the cloud-init example
// use are the ones install.sh takes; a missing package is a usage error.
func TestInstallScriptUsage(t *testing.T) {
	root := repoRoot(t)
	script := filepath.Join(root, "scripts/install.sh")
	help := run(t, nil, "", script, "--help")
	var ci struct {
		RunCmd [][]string `yaml:"runcmd"`
	}
	text := readFile(t, filepath.Join(root, "scripts/cloud-init.yaml"))
	if !strings.HasPrefix(text, "#cloud-config\n") {
		t.Error("scripts/cloud-init.yaml does not start with #cloud-config")
	}
	if err := yaml.Unmarshal([]byte(text), &ci); err != nil {
		t.Fatal(err)
	}
	var used []string
	for _, cmd := range ci.RunCmd {
		if len(cmd) > 1 && strings.HasSuffix(cmd[1], "install.sh") {
			for _, a := range cmd[2:] {
				if strings.HasPrefix(a, "--") {
					used = append(used, a)
				}
			}
		}
	}
	if len(used) == 0 {
		t.Fatal("the cloud-init example does not run install.sh")
	}
	readme := readFile(t, filepath.Join(root, "README.md"))
	for _, opt := range used {
		if !strings.Contains(help, "  "+opt+" ") && !strings.Contains(help, "  "+opt+"\n") {
			t.Errorf("cloud-init.yaml passes %s, which install.sh --help does not list", opt)
		}
	}
	for _, opt := range []string{"--package", "--application", "--channel"} {
		if !strings.Contains(readme, "    "+opt+" ") {
			t.Errorf("the README's user-data example lacks %s", opt)
		}
	}
	if _, stderr, err := runErr([]string{"ROLLBACK_AGENT_PACKAGE="}, "", script, "--application", "demo"); err == nil || !strings.Contains(stderr, "--package is required") {
		t.Errorf("install.sh without a package: %v\n%s", err, stderr)
	}
}

// testInstallFromRemote installs from an s3:// URL (real awscli against
// moto) and from an https:// URL (real curl), with --no-start as an image
// build would: the package lands, the config is written, nothing starts.
func testInstallFromRemote(t *testing.T, root string, b built) {
	need(t, "aws", "curl")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	moto, err := testbed.StartMoto(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer moto.Stop()
	awsEnv := []string{"AWS_ACCESS_KEY_ID=" + testbed.AccessKey, "AWS_SECRET_ACCESS_KEY=" + testbed.SecretKey,
		"AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_ENDPOINT_URL=" + moto.URL,
		"AWS_DEFAULT_REGION=" + testbed.Region, "AWS_EC2_METADATA_DISABLED=true", "AWS_PAGER="}
	run(t, awsEnv, "", "aws", "s3", "mb", "s3://pkgs")
	key := "s3://pkgs/rollback-agent/" + filepath.Base(b.rpm)
	run(t, awsEnv, "", "aws", "s3", "cp", "--only-show-errors", b.rpm, key)

	srv := httptest.NewTLSServer(http.FileServer(http.Dir(filepath.Dir(b.rpm))))
	defer srv.Close()
	certFile := filepath.Join(t.TempDir(), "ca.pem")
	writeFile(t, certFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})), 0o644)

	for _, src := range []string{key, srv.URL + "/" + filepath.Base(b.rpm)} {
		r := newRoot(t)
		env := append([]string{"ROOT=" + r, "SYSTEMCTL=" + filepath.Join(r, "usr/bin/systemctl"), "CURL_CA_BUNDLE=" + certFile}, awsEnv...)
		_, out, err := runErr(env, "", filepath.Join(root, "scripts/install.sh"), "--package", src, "--application", "demo", "--no-start")
		if err != nil {
			t.Fatalf("install.sh --package %s: %v\n%s", src, err, out)
		}
		if !strings.Contains(out, "downloading "+src) || !strings.Contains(out, "not started (--no-start)") {
			t.Errorf("install.sh --package %s said:\n%s", src, out)
		}
		run(t, nil, "", "rpm", "--root", r, "-q", "rollback-agent")
		if got := readFile(t, filepath.Join(r, "etc/rollback-agent/agent.yaml")); !strings.Contains(got, "\napplication: demo\n") {
			t.Errorf("agent.yaml after --package %s:\n%s", src, got)
		}
		for _, call := range stubCalls(t, r) {
			if strings.Contains(call, "start") {
				t.Errorf("--no-start started the unit: systemctl %s", call)
			}
		}
	}
}
