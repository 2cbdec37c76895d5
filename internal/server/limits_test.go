package server

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/testutil"
)

const eventsRequest = "GET /v1/events HTTP/1.1|Host: agent||"

// A member of the socket group holds only its share of the API: its
// streams and connections beyond the limits are answered 429 saying
// why, all others together hold no more than the total, and root is
// answered whatever they hold. Places are given back when connections
// close.
func TestOthersAreHeldToTheirLimitsRootIsNot(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		chmod(t, d)
	}
	sock := filepath.Join(dir, "run", "agent.sock")
	s := New(Options{SocketPath: sock, Group: Group{Name: "testers", GID: gid}, Version: "v-test",
		Limits: Limits{ConnsPerUID: 3, Conns: 4, StreamsPerUID: 2}}, fakeBackend{})
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	s.SetReady(true, "")
	alice := &syscall.Credential{Uid: 65534, Gid: gid, Groups: []uint32{}}
	bob := &syscall.Credential{Uid: 65533, Gid: gid, Groups: []uint32{}}

	// Three streams: two are this user's share, the third is refused.
	streams := testutil.HoldConns(t, alice, sock, 3, eventsRequest, 20*time.Second)
	if streams.Counts["200"] != 2 || streams.Counts["429"] != 1 {
		t.Fatalf("3 streams of one member: %v, want 2 held and 1 refused", streams.Counts)
	}
	code, body := curl(t, alice, sock, "http://agent/v1/events")
	if code != 429 || !strings.Contains(body, `"code": "too_many"`) || !strings.Contains(body, "at most 2 per user other than root") {
		t.Errorf("a stream over the limit: %d %s", code, body)
	}
	// Two streams held, one connection left to this uid: idle ones over
	// it are answered 429 as soon as they are accepted (the one taken is
	// closed by the server when no request comes).
	idle := testutil.HoldConns(t, alice, sock, 3, "", 20*time.Second)
	if idle.Counts["429"] != 2 {
		t.Errorf("3 idle connections with 1 left: %v, want 2 refused", idle.Counts)
	}
	// Another member: its two streams reach the total for all but root
	// (4), and its next connection is refused for that.
	others := testutil.HoldConns(t, bob, sock, 2, eventsRequest, 20*time.Second)
	if others.Counts["200"] != 2 {
		t.Errorf("2 streams of a second member: %v", others.Counts)
	}
	code, body = curl(t, bob, sock, "http://agent/v1/status")
	if code != 429 || !strings.Contains(body, "4 for all of them together") {
		t.Errorf("a second member over the total: %d %s", code, body)
	}
	// Root is answered, and holds as many streams as it likes.
	if code, body := curl(t, nil, sock, "http://agent/v1/status"); code != 200 {
		t.Errorf("root while the others hold everything: %d %s", code, body)
	}
	if r := testutil.HoldConns(t, nil, sock, 10, eventsRequest, 20*time.Second); r.Counts["200"] != 10 {
		t.Errorf("10 streams of root: %v", r.Counts)
	}
	// Places come back when connections close.
	streams.Release()
	idle.Release()
	others.Release()
	testutil.WaitFor(t, 20*time.Second, "the member's places given back", func() error {
		if code, body := curl(t, bob, sock, "http://agent/v1/status"); code != 200 {
			return fmt.Errorf("%d %s", code, body)
		}
		return nil
	})
}

func chmod(t *testing.T, dir string) {
	t.Helper()
	if err := exec.Command("chmod", "0755", dir).Run(); err != nil {
		t.Fatal(err)
	}
}
