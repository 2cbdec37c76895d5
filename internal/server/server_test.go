package server

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
)

// fakeBackend is a small fake: these tests are about the transport and
// authorization, not about what the agent answers.
type fakeBackend struct{}

func (fakeBackend) Status(context.Context) api.Status {
	return api.Status{SchemaVersion: api.SchemaVersion, State: api.StateIdle, Summary: "fake"}
}
func (fakeBackend) Deploy(context.Context, api.DeployRequest) (*api.Deployment, error) {
	return nil, BadRequest(errors.New("fake: no deployments"))
}
func (fakeBackend) Rollback(context.Context, api.RollbackRequest) (*api.Deployment, error) {
	return nil, Conflict(errors.New("fake: nothing to roll back to"))
}
func (fakeBackend) Deployments(int) ([]api.Deployment, error) { return nil, nil }
func (fakeBackend) Deployment(id string) (*api.Deployment, error) {
	return nil, NotFound(errors.New("fake: no deployment " + id))
}
func (fakeBackend) Subscribe(string) (<-chan api.Event, func()) {
	ch := make(chan api.Event)
	return ch, func() {}
}
func (fakeBackend) LogDir(string) string { return "/nonexistent" }
func (fakeBackend) Checkpoints(context.Context) (*api.CheckpointList, error) {
	return &api.CheckpointList{SchemaVersion: api.SchemaVersion}, nil
}
func (fakeBackend) CreateCheckpoint(context.Context, api.CheckpointRequest) (*api.Checkpoint, error) {
	return nil, Conflict(errors.New("fake: no AWS"))
}
func (fakeBackend) Checkpoint(_ context.Context, id string) (*api.Checkpoint, error) {
	return nil, NotFound(errors.New("fake: no checkpoint " + id))
}
func (fakeBackend) PinCheckpoint(_ context.Context, id string, _ bool) (*api.Checkpoint, error) {
	return nil, NotFound(errors.New("fake: no checkpoint " + id))
}
func (fakeBackend) DeleteCheckpoint(_ context.Context, id string) error {
	return NotFound(errors.New("fake: no checkpoint " + id))
}
func (fakeBackend) PruneCheckpoints(context.Context, bool) (*api.PruneReport, error) {
	return &api.PruneReport{SchemaVersion: api.SchemaVersion}, nil
}
func (fakeBackend) Health(context.Context) (*api.HealthReport, error) {
	return &api.HealthReport{SchemaVersion: api.SchemaVersion, Healthy: true}, nil
}
func (fakeBackend) Guard(context.Context, api.GuardRequest) (*api.GuardStarted, error) {
	return nil, Conflict(errors.New("fake: no AWS"))
}
func (fakeBackend) GuardDone(_ context.Context, id string, _ api.GuardDone) error {
	return NotFound(errors.New("fake: no guard " + id))
}
func (fakeBackend) Metrics(context.Context) string { return "go_goroutines 1\n" }
func (fakeBackend) Acknowledge(_ context.Context, kind string) error {
	return Conflict(errors.New("fake: nothing to acknowledge of kind " + kind))
}
func (fakeBackend) RestoreCheckpoint(_ context.Context, id string, _ api.RestoreRequest) (*api.Deployment, error) {
	return nil, NotFound(errors.New("fake: no checkpoint " + id))
}

const gid = 4243

func startServer(t *testing.T) (*Server, string) {
	t.Helper()
	dir := t.TempDir()
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o755)
	sock := filepath.Join(dir, "run", "agent.sock")
	s := New(Options{SocketPath: sock, Group: Group{Name: "testers", GID: gid}, Version: "v-test"}, fakeBackend{})
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	return s, sock
}

// curl is an independent client; cred runs it as another user.
func curl(t *testing.T, cred *syscall.Credential, sock string, args ...string) (int, string) {
	t.Helper()
	return runCurl(cred, sock, "", args...)
}

// curlStdin sends stdin as the body (for "--data-binary @-").
func curlStdin(t *testing.T, sock, stdin string, args ...string) (int, string) {
	t.Helper()
	return runCurl(nil, sock, stdin, args...)
}

func runCurl(cred *syscall.Credential, sock, stdin string, args ...string) (int, string) {
	cmd := exec.Command("curl", append([]string{"-s", "-o", "-", "-w", "\n%{http_code}", "--unix-socket", sock}, args...)...)
	cmd.Dir = "/"
	cmd.Stdin = strings.NewReader(stdin)
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	out, _ := cmd.Output()
	s := strings.TrimRight(string(out), "\n")
	i := strings.LastIndex(s, "\n")
	code := 0
	if i >= 0 {
		code = atoi(s[i+1:])
	}
	return code, s[:max(i, 0)]
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

func TestReadinessGateThenStatus(t *testing.T) {
	s, sock := startServer(t)
	code, body := curl(t, nil, sock, "http://agent/v1/status")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, `"code": "starting"`) || !strings.Contains(body, "starting") {
		t.Errorf("before ready: %d %s", code, body)
	}
	s.SetReady(true, "")
	code, body = curl(t, nil, sock, "http://agent/v1/status")
	if code != 200 || !strings.Contains(body, `"summary": "fake"`) {
		t.Errorf("after ready: %d %s", code, body)
	}
}

// A limited server (a damaged journal) answers the routes it lets
// through and refuses every other one, naming why.
func TestLimitLetsOnlyTheNamedRoutesThrough(t *testing.T) {
	s, sock := startServer(t)
	s.SetReady(true, "")
	s.Limit("the journal is damaged: recover it", "GET "+api.PathStatus)
	if code, body := curl(t, nil, sock, "http://agent/v1/status"); code != 200 || !strings.Contains(body, `"summary": "fake"`) {
		t.Errorf("status through the limit: %d %s", code, body)
	}
	for _, args := range [][]string{{"http://agent/v1/deployments"}, {"-X", "POST", "-d", `{"source":"/x"}`, "http://agent/v1/deployments"}} {
		if code, body := curl(t, nil, sock, args...); code != http.StatusConflict || !strings.Contains(body, "the journal is damaged: recover it") {
			t.Errorf("%v past the limit: %d %s", args, code, body)
		}
	}
}

func TestPeerCredentialAuthorization(t *testing.T) {
	s, sock := startServer(t)
	s.SetReady(true, "")
	// Open the file modes wide so that only SO_PEERCRED stands between a
	// stranger and the API: the check must hold on its own.
	os.Chmod(filepath.Dir(sock), 0o755)
	os.Chmod(sock, 0o666)

	stranger := &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}
	primary := &syscall.Credential{Uid: 65534, Gid: gid, Groups: []uint32{}}
	supplementary := &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{100, gid}}

	if code, body := curl(t, stranger, sock, "http://agent/v1/status"); code != 403 || !strings.Contains(body, "neither root nor a member of group testers") {
		t.Errorf("stranger GET: %d %s", code, body)
	}
	for name, cred := range map[string]*syscall.Credential{"primary": primary, "supplementary": supplementary} {
		if code, body := curl(t, cred, sock, "http://agent/v1/status"); code != 200 {
			t.Errorf("%s member GET: %d %s", name, code, body)
		}
		if code, body := curl(t, cred, sock, "-X", "POST", "http://agent/v1/deployments"); code != 403 || !strings.Contains(body, "may only read") {
			t.Errorf("%s member POST: %d %s", name, code, body)
		}
	}
	if code, body := curl(t, nil, sock, "-X", "POST", "-d", `{"source":"/x"}`, "http://agent/v1/deployments"); code != 400 || !strings.Contains(body, "fake: no deployments") {
		t.Errorf("root POST should reach the handler: %d %s", code, body)
	}
	if code, body := curl(t, nil, sock, "-X", "POST", "-d", `{"sauce":"/x"}`, "http://agent/v1/deployments"); code != 400 || !strings.Contains(body, "unknown field") {
		t.Errorf("unknown request fields are refused: %d %s", code, body)
	}
}

func TestListenRefusesNonSocketAndLiveSocket(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "agent.sock")
	os.WriteFile(path, []byte("x"), 0o600)
	s := New(Options{SocketPath: path, Group: Group{Name: "root", GID: 0}}, fakeBackend{})
	if err := s.Listen(); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("regular file: %v", err)
	}
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := s.Listen(); err == nil || !strings.Contains(err.Error(), "another agent is answering") {
		t.Errorf("live socket: %v", err)
	}
}

// A socket in a directory others may write is refused, and nothing of
// that directory is changed; so is a socket directory that a user made
// first, or a link a user put there (issue 17, item 2).
func TestSocketInADirectoryUsersControlIsRefused(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o777|os.ModeSticky)
	s := New(Options{SocketPath: filepath.Join(dir, "a.sock"), Group: Group{Name: "g", GID: gid}}, fakeBackend{})
	if err := s.Listen(); err == nil || !strings.Contains(err.Error(), "writable by group or others") {
		t.Fatalf("socket directly in a sticky shared dir: %v", err)
	}
	fi, _ := os.Stat(dir)
	if fi.Mode()&os.ModeSticky == 0 || fi.Mode().Perm() != 0o777 {
		t.Errorf("shared dir mode changed to %v", fi.Mode())
	}
	// The user made the socket's directory first.
	theirs := filepath.Join(dir, "theirs")
	os.Mkdir(theirs, 0o755)
	os.Chown(theirs, 65534, 65534)
	s = New(Options{SocketPath: filepath.Join(theirs, "a.sock"), Group: Group{Name: "g", GID: gid}}, fakeBackend{})
	if err := s.Listen(); err == nil || !strings.Contains(err.Error(), "owned by uid 65534") {
		t.Fatalf("socket dir made by a user: %v", err)
	}
	if fi, _ := os.Stat(theirs); fi.Mode().Perm() != 0o755 || fi.Sys().(*syscall.Stat_t).Gid != 65534 {
		t.Errorf("the user's dir was changed: %v gid %d", fi.Mode(), fi.Sys().(*syscall.Stat_t).Gid)
	}
	// The user's link to a directory of root's: never chmod'ed or chgrp'ed.
	victim := filepath.Join(t.TempDir(), "victim")
	os.Mkdir(victim, 0o700)
	link := filepath.Join(dir, "link")
	os.Symlink(victim, link)
	os.Lchown(link, 65534, 65534)
	s = New(Options{SocketPath: filepath.Join(link, "a.sock"), Group: Group{Name: "g", GID: gid}}, fakeBackend{})
	if err := s.Listen(); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("socket dir through a user's link: %v", err)
	}
	if fi, _ := os.Stat(victim); fi.Mode().Perm() != 0o700 || fi.Sys().(*syscall.Stat_t).Gid != 0 {
		t.Errorf("the link's target was changed: %v gid %d", fi.Mode(), fi.Sys().(*syscall.Stat_t).Gid)
	}
}

func TestLookupGroup(t *testing.T) {
	if g, err := LookupGroup("root"); err != nil || g.GID != 0 {
		t.Errorf("root: %+v %v", g, err)
	}
	if g, err := LookupGroup("4242"); err != nil || g.GID != 4242 {
		t.Errorf("numeric: %+v %v", g, err)
	}
	if _, err := LookupGroup("no-such-group-xyz"); err == nil || !strings.Contains(err.Error(), "sysusers") {
		t.Errorf("missing group: %v", err)
	}
}

func TestWrongMethodAndOversizedBody(t *testing.T) {
	s, sock := startServer(t)
	s.SetReady(true, "")
	code, body := curl(t, nil, sock, "-X", "DELETE", "http://agent/v1/status")
	if code != http.StatusMethodNotAllowed || !strings.Contains(body, "method DELETE not allowed on /v1/status (allowed: GET)") {
		t.Errorf("DELETE /v1/status: %d %s", code, body)
	}
	code, body = curl(t, nil, sock, "-X", "GET", "http://agent/v1/nothing")
	if code != http.StatusNotFound || !strings.Contains(body, `"code": "not_found"`) {
		t.Errorf("unknown path: %d %s", code, body)
	}
	big := `{"source": "/` + strings.Repeat("a", maxBody+10) + `"}`
	code, body = curlStdin(t, sock, big, "-X", "POST", "-H", "Content-Type: application/json", "--data-binary", "@-", "http://agent/v1/deployments")
	if code != http.StatusRequestEntityTooLarge || !strings.Contains(body, `"code": "too_large"`) || !strings.Contains(body, "too large") {
		t.Errorf("2 MiB body: %d %.200s", code, body)
	}
}
