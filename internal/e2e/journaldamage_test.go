package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/journal"
	"github.com/rollback-agent/rollback-agent/internal/testbed/revision"
)

// Issue 17 item 12: a journal whose data pages are overwritten made bbolt
// panic at start, and a crash loop followed. The agent now starts on a
// scratch journal in needs_operator (journal-damaged): status and doctor
// say what is wrong and what to do, every other request is refused, and
// the damaged file is neither written nor movable while it runs. After
// `agentctl recover journal` the agent is journal-lost, having rebuilt
// the installed revision from releases/: the next deployment stops that
// revision and replaces its files by its install manifest, as if the
// journal had never been lost.
func TestADamagedJournalIsReportedThenRebuilt(t *testing.T) {
	h := newHost(t, "checkpoint: {before_deploy: [], required: false}\nboot: {assess: false}\n")
	h.start()
	dest := filepath.Join(h.dir, "srv", "tiny")
	stopped := filepath.Join(h.dir, "stopped")
	b := h.bundle("tiny", revision.Revision{Dest: dest, Files: map[string]revision.File{"v": {Content: "1"}, "only-in-1": {Content: "x"}},
		Hooks: map[string]string{"ApplicationStop": "echo tiny >> " + stopped}})
	if r := h.ctl("deploy", b, "--wait"); r.code != 0 {
		t.Fatalf("deploy: %d %s", r.code, r.stderr)
	}
	h.agent.Stop()

	// The data pages (after bbolt's two meta pages) overwritten.
	path := filepath.Join(h.stateDir, journal.FileName)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	page := int64(os.Getpagesize())
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte{0xA5}, int(fi.Size()-2*page)), 2*page); err != nil {
		t.Fatal(err)
	}
	f.Close()
	damaged, _ := os.ReadFile(path)

	h.start()
	st := h.status()
	if st.State != api.StateNeedsOperator || st.Operator == nil || st.Operator.Trouble != journal.TroubleJournalDamaged ||
		!strings.Contains(st.Operator.What, path) || !strings.Contains(st.Operator.Next, "agentctl recover journal") ||
		st.Identity.InstanceID != h.inst.Doc.InstanceID {
		t.Fatalf("on a damaged journal: state %s, operator %+v, instance %q", st.State, st.Operator, st.Identity.InstanceID)
	}
	if c := h.doctorCheck("journal"); c.Result != api.DoctorFail || !strings.Contains(c.Detail, journal.TroubleJournalDamaged) || !strings.Contains(c.Fix, "agentctl recover journal") {
		t.Errorf("doctor on a damaged journal: %+v", c)
	}
	for _, args := range [][]string{{"deploy", b}, {"rollback"}, {"history"}, {"acknowledge", journal.TroubleJournalDamaged}, {"checkpoint", "create"}} {
		if r := h.ctl(args...); r.code == 0 || !strings.Contains(r.stderr, "agentctl recover journal") {
			t.Errorf("agentctl %v on a damaged journal: exit %d %s %s", args, r.code, r.stdout, r.stderr)
		}
	}
	if r := h.ctl("recover", "journal", "--state-dir", h.stateDir); r.code == 0 || !strings.Contains(r.stderr, "in use by a running agent") {
		t.Errorf("recover with the agent running: %d %s %s", r.code, r.stdout, r.stderr)
	}
	h.agent.Stop()
	if b, _ := os.ReadFile(path); !bytes.Equal(b, damaged) {
		t.Error("the agent wrote to the damaged journal")
	}

	r := h.ctl("recover", "journal", "--state-dir", h.stateDir)
	if r.code != 0 || !strings.Contains(r.stdout, journal.FileName+".damaged-") {
		t.Fatalf("recover journal: %d %s %s", r.code, r.stdout, r.stderr)
	}
	h.start()
	st = h.status()
	if st.State != api.StateNeedsOperator || st.Operator == nil || st.Operator.Trouble != journal.TroubleJournalLost ||
		!strings.Contains(st.Operator.What, "rebuilt from releases/: the installed revision is tiny") {
		t.Fatalf("after recovery: state %s, operator %+v", st.State, st.Operator)
	}
	if r := h.ctl("deploy", b); r.code == 0 {
		t.Errorf("a deployment was accepted before the operator acknowledged: %s", r.stdout)
	}
	if r := h.ctl("acknowledge", journal.TroubleJournalLost); r.code != 0 {
		t.Fatalf("acknowledge: %d %s", r.code, r.stderr)
	}
	// The next revision, to the same place: tiny's ApplicationStop runs and
	// its files go by its manifest (without the rebuild, its "v" would be
	// a file the agent did not install, refused by file_exists_behavior).
	b2 := h.bundle("tiny2", revision.Revision{Dest: dest, Files: map[string]revision.File{"v": {Content: "2"}}})
	if r := h.ctl("deploy", b2, "--wait"); r.code != 0 {
		t.Fatalf("deploy after the acknowledgement: %d %s %s", r.code, r.stdout, r.stderr)
	}
	if got, _ := os.ReadFile(stopped); string(got) != "tiny\n" {
		t.Errorf("ApplicationStop of the rebuilt installed revision: %q", got)
	}
	if got, _ := os.ReadFile(filepath.Join(dest, "v")); string(got) != "2" {
		t.Errorf("v = %q, want 2", got)
	}
	if _, err := os.Stat(filepath.Join(dest, "only-in-1")); !os.IsNotExist(err) {
		t.Errorf("tiny's only-in-1 left behind: %v", err)
	}
}

// doctorCheck runs agentctl doctor and returns its check of that name.
func (h *host) doctorCheck(name string) api.DoctorCheck {
	h.t.Helper()
	var rep api.DoctorReport
	h.decode(h.ctl("doctor", "-o", "json", "--timeout", "60s"), &rep, "agentctl doctor")
	for _, c := range rep.Checks {
		if c.Name == name {
			return c
		}
	}
	h.t.Errorf("agentctl doctor has no check %q: %+v", name, rep.Checks)
	return api.DoctorCheck{}
}
