package e2e

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// nobody is the local user of these attacks.
const nobody = 65534

var asNobody = &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}}

// sharedDir makes a world-writable sticky directory under the host's,
// like /tmp or /run/user: where the attacker works.
func (h *host) sharedDir() string {
	h.t.Helper()
	d := filepath.Join(h.dir, "shared")
	if err := os.Mkdir(d, 0o755); err != nil {
		h.t.Fatal(err)
	}
	if err := os.Chmod(d, 0o777|os.ModeSticky); err != nil {
		h.t.Fatal(err)
	}
	return d
}

func ownedBy(t *testing.T, path string) (os.FileMode, uint32, uint32) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return fi.Mode(), st.Uid, st.Gid
}

// Issue 17 item 2: the socket and the state dir in places a user
// controls. Each variant must stop the agent at start (exit 78, the
// directory named) and leave what the user pointed at untouched.
func TestAgentRefusesSocketAndStateDirsAUserControls(t *testing.T) {
	h := newHost(t, "")
	shared := h.sharedDir()
	goodSocket, goodState := h.socket, h.stateDir

	// A root-only directory and file the attacks aim at.
	victimDir := filepath.Join(h.dir, "victim")
	if err := os.Mkdir(victimDir, 0o700); err != nil {
		t.Fatal(err)
	}
	victimFile := filepath.Join(victimDir, "secret")
	if err := os.WriteFile(victimFile, []byte("root only\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name, why string
		prepare   func() (socket, state string)
	}{
		{"socket dir made first by the user", "owned by uid 65534", func() (string, string) {
			d := filepath.Join(shared, "agent")
			os.Mkdir(d, 0o777)
			os.Chmod(d, 0o777)
			os.Chown(d, nobody, nobody)
			return filepath.Join(d, "agent.sock"), goodState
		}},
		{"socket dir is the user's link to a root directory", "symbolic link", func() (string, string) {
			l := filepath.Join(shared, "agent-link")
			os.Symlink(victimDir, l)
			os.Lchown(l, nobody, nobody)
			return filepath.Join(l, "agent.sock"), goodState
		}},
		{"socket directly in the shared directory", "writable by group or others", func() (string, string) {
			return filepath.Join(shared, "agent.sock"), goodState
		}},
		{"state dir owned by the user, with an agent.pid link", "owned by uid 65534", func() (string, string) {
			d := filepath.Join(h.dir, "their-state")
			os.Mkdir(d, 0o755)
			os.Symlink(victimFile, filepath.Join(d, "agent.pid"))
			os.Lchown(filepath.Join(d, "agent.pid"), nobody, nobody)
			os.Chown(d, nobody, nobody)
			return goodSocket, d
		}},
		{"state dir under a group-writable directory", "writable by group or others", func() (string, string) {
			d := filepath.Join(h.dir, "team")
			os.Mkdir(d, 0o775)
			os.Chmod(d, 0o775)
			return goodSocket, filepath.Join(d, "state")
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h.socket, h.stateDir = c.prepare()
			h.writeConfig("")
			mode, uid, gid := ownedBy(t, victimDir)
			code, out := h.runAgentToExit(h.env)
			if code != 78 || !strings.Contains(out, c.why) || !strings.Contains(out, "refusing to start") {
				t.Errorf("exit %d, want 78 naming %q:\n%s", code, c.why, out)
			}
			if m, u, g := ownedBy(t, victimDir); m != mode || u != uid || g != gid {
				t.Errorf("the directory the user pointed at changed: %v %d:%d -> %v %d:%d", mode, uid, gid, m, u, g)
			}
			if b, _ := os.ReadFile(victimFile); string(b) != "root only\n" {
				t.Errorf("the file the user's link points at was written: %q", b)
			}
		})
	}
	// The same host with its own paths starts (the control).
	h.socket, h.stateDir = goodSocket, goodState
	h.writeConfig("")
	h.start()
	if st := h.status(); st.Identity.InstanceID != h.inst.Doc.InstanceID {
		t.Errorf("control: status %+v", st.Identity)
	}
}

// fakeAgent is a user's own server where root's agentctl may look for the
// agent: it answers every request with {} and keeps what it was sent.
type fakeAgent struct {
	cmd      *exec.Cmd
	received string
}

const fakeAgentPy = `
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen(8)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    data = c.recv(65536)
    with open(sys.argv[2], "ab") as f:
        f.write(data)
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
    c.close()
`

// startFakeAgent runs the fake as cred (nil: as root) on socket.
func startFakeAgent(t *testing.T, cred *syscall.Credential, socket string) *fakeAgent {
	t.Helper()
	rec := filepath.Join(filepath.Dir(socket), filepath.Base(socket)+".received")
	if err := os.WriteFile(rec, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	os.Chmod(rec, 0o666)
	// The system python (apt python3), which every user may run.
	cmd := exec.Command("/usr/bin/python3", "-c", fakeAgentPy, socket, rec)
	cmd.Dir = "/"
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// Its "ready" line is the event: the socket is bound and listening.
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || strings.TrimSpace(line) != "ready" {
		t.Fatalf("fake agent did not start: %q %v", line, err)
	}
	return &fakeAgent{cmd: cmd, received: rec}
}

func (f *fakeAgent) sent(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(f.received)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Issue 17 item 2, agentctl's side: root's agentctl must not talk to a
// socket a user made (to learn what root deploys, or to answer for the
// agent), nor to one served by a user's process whatever owns the file.
func TestAgentctlRefusesASocketRootDoesNotOwn(t *testing.T) {
	h := newHost(t, "")
	shared := h.sharedDir()

	// A user's socket, served by the user.
	theirs := filepath.Join(shared, "agent.sock")
	fake := startFakeAgent(t, asNobody, theirs)
	h.socket = theirs
	r := h.ctl("deploy", "/srv/secret-release.tgz")
	if r.code == 0 || !strings.Contains(r.stderr, "refusing to talk to "+theirs) || !strings.Contains(r.stderr, "owned by uid 65534") {
		t.Errorf("user's socket: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if got := fake.sent(t); got != "" {
		t.Errorf("agentctl sent the user's server:\n%s", got)
	}

	// The file made root's, the server still the user's: the kernel's
	// peer credentials tell.
	if err := os.Lchown(theirs, 0, 0); err != nil {
		t.Fatal(err)
	}
	r = h.ctl("status")
	if r.code == 0 || !strings.Contains(r.stderr, "runs as uid 65534") {
		t.Errorf("root's file, user's server: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if got := fake.sent(t); got != "" {
		t.Errorf("agentctl sent the user's server:\n%s", got)
	}

	// Root's own server on a socket the user owns.
	other := filepath.Join(shared, "other.sock")
	rootFake := startFakeAgent(t, nil, other)
	if err := os.Lchown(other, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	h.socket = other
	if r := h.ctl("status"); r.code == 0 || !strings.Contains(r.stderr, "owned by uid 65534") {
		t.Errorf("user's socket file: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if got := rootFake.sent(t); got != "" {
		t.Errorf("agentctl sent a request through the user's socket:\n%s", got)
	}
	// --socket-owner names a user whose agent is trusted after all.
	if r := h.ctl("--socket-owner", "65534", "status", "-o", "json"); !strings.Contains(rootFake.sent(t), "GET /v1/status") {
		t.Errorf("--socket-owner 65534: exit %d, the server saw %q\n%s", r.code, rootFake.sent(t), r.stderr)
	}
}
