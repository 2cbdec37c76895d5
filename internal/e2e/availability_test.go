package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rollback-agent/rollback-agent/internal/testutil"
)

// member is a member of the socket group: it may read the API, nothing
// more, and is who these attacks come from.
var member = &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{testGID}}

func get(path string) string { return "GET " + path + " HTTP/1.1|Host: agent|Connection: close||" }

// Issue 17 item 11: what a member of the socket group reads at will must
// not cost the host a check process or the account an EC2 call per
// request. GET /v1/health asked 100 times at once runs its command check
// one round at a time, never two at once; GET /v1/checkpoints asked 200
// times (in waves of 25) reads the catalogue from EC2 at most once per
// 10 seconds, and asking for a checkpoint that does not exist costs no
// call of its own.
func TestAMembersReadsAreShared(t *testing.T) {
	h := newHost(t, "")
	runs := filepath.Join(h.dir, "check-runs")
	h.writeConfig("checkpoint: {before_deploy: [], required: false}\n" + fastHealth(fmt.Sprintf(
		"    - {name: slow, command: {argv: [/bin/sh, -c, \"echo start >> %s; sleep 0.3; echo end >> %s\"], timeout: 5s}}", runs, runs), time.Second))
	h.start()

	// 100 at once (one user holds 32 connections at most: the others are
	// answered 429, or closed when they come faster than they are
	// answered).
	r := testutil.HoldConns(t, member, h.socket, 100, get("/v1/health"), 60*time.Second)
	r.Release()
	if r.Counts["200"] == 0 || r.Counts["200"]+r.Counts["429"]+r.Counts["eof"] != 100 {
		t.Errorf("100 health requests at once: %v, want each answered 200 or 429, or closed", r.Counts)
	}
	b, err := os.ReadFile(runs)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Fields(string(b))
	for i, l := range lines {
		if want := []string{"start", "end"}[i%2]; l != want {
			t.Fatalf("two check rounds ran at once (line %d is %q):\n%s", i+1, l, b)
		}
	}
	t.Logf("100 health requests (%v) ran %d check rounds", r.Counts, len(lines)/2)

	h.bed.AWS.ResetCounts()
	start := time.Now()
	answered := 0
	for range 8 {
		w := testutil.HoldConns(t, member, h.socket, 25, get("/v1/checkpoints"), 60*time.Second)
		w.Release()
		answered += w.Counts["200"]
	}
	for range 20 {
		w := testutil.HoldConns(t, member, h.socket, 5, get("/v1/checkpoints/cp-does-not-exist"), 60*time.Second)
		w.Release()
		if w.Counts["404"] != 5 {
			t.Errorf("an unknown checkpoint: %v, want 404", w.Counts)
		}
	}
	took := time.Since(start)
	calls := h.bed.AWS.Count("ec2", "DescribeSnapshots")
	// (+2: the catalogue the agent reads at start may still be running.)
	if most := int(took/catalogueFresh) + 2; calls > most || answered != 200 {
		t.Errorf("200 catalogue and 100 checkpoint requests in %s: %d answered, %d DescribeSnapshots calls (at most %d)", took, answered, calls, most)
	}
	t.Logf("300 checkpoint requests in %s: %d DescribeSnapshots, %d DescribeImages", took.Round(time.Millisecond), calls, h.bed.AWS.Count("ec2", "DescribeImages"))
}

// catalogueFresh is how long the agent gives its catalogue again.
const catalogueFresh = 10 * time.Second

// A member holding thousands of event streams must not take the agent's
// descriptors: with the agent's limit lowered to 512, 600 streams of one
// member leave root's `agentctl status` answered; the member holds its
// share (4 streams) and is told why the rest are refused.
func TestAMemberCannotStarveRoot(t *testing.T) {
	h := newHost(t, "")
	h.start()
	lim := unix.Rlimit{Cur: 512, Max: 512}
	if err := unix.Prlimit(h.agent.PID(), unix.RLIMIT_NOFILE, &lim, nil); err != nil {
		t.Fatal(err)
	}
	streams := testutil.HoldConns(t, member, h.socket, 600, "GET /v1/events HTTP/1.1|Host: agent||", 60*time.Second)
	t.Logf("600 streams of one member: %v; the agent holds %d descriptors", streams.Counts, openFDs(h.agent.PID()))
	if streams.Counts["200"] != 4 {
		t.Errorf("600 streams of one member: %v, want 4 held", streams.Counts)
	}
	res := h.ctl("status")
	if res.code != 0 || !strings.Contains(res.stdout, "Idle") {
		t.Fatalf("root's status while a member holds streams: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if n := openFDs(h.agent.PID()); n >= 400 {
		t.Errorf("the agent holds %d descriptors of 512", n)
	}
	// The member is told why its next stream is refused.
	cmd := exec.Command("curl", "-s", "-w", "\n%{http_code}", "--unix-socket", h.socket, "http://agent/v1/events")
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: member}
	if out, err := cmd.Output(); err != nil || !strings.HasSuffix(string(out), "\n429") || !strings.Contains(string(out), "at most 4 per user other than root") {
		t.Errorf("the member's next stream: %v\n%s", err, out)
	}
	streams.Release()
}
