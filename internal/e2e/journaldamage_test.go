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
// panic at start, and a crash loop followed. The agent now refuses to
// start with exit 78 (the unit does not restart it), naming the file and
// the recovery; `agentctl recover journal` moves the file aside, and the
// agent started next is needs_operator (journal-lost) until acknowledged.
func TestADamagedJournalStopsTheAgentUntilRecovered(t *testing.T) {
	h := newHost(t, "checkpoint: {before_deploy: [], required: false}\nboot: {assess: false}\n")
	h.start()
	b := h.bundle("tiny", revision.Revision{Dest: filepath.Join(h.dir, "srv", "tiny"), Files: map[string]revision.File{"v": {Content: "1"}}})
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

	code, out := h.runAgentToExit(nil)
	if code != 78 || !strings.Contains(out, path) || !strings.Contains(out, "agentctl recover journal") || strings.Contains(out, "panic") {
		t.Fatalf("agent on a damaged journal: exit %d, want 78 naming %s and the recovery\n%s", code, path, out)
	}
	// Recovery refuses while an agent holds the journal: shown with a
	// healthy one further down; here the agent is stopped.
	r := h.ctl("recover", "journal", "--state-dir", h.stateDir)
	if r.code != 0 || !strings.Contains(r.stdout, journal.FileName+".damaged-") {
		t.Fatalf("recover journal: %d %s %s", r.code, r.stdout, r.stderr)
	}
	h.start()
	st := h.status()
	if st.State != api.StateNeedsOperator || st.Operator == nil || st.Operator.Trouble != journal.TroubleJournalLost {
		t.Fatalf("after recovery: state %s, operator %+v", st.State, st.Operator)
	}
	if r := h.ctl("deploy", b); r.code == 0 {
		t.Errorf("a deployment was accepted before the operator acknowledged: %s", r.stdout)
	}
	if r := h.ctl("recover", "journal", "--state-dir", h.stateDir); r.code == 0 || !strings.Contains(r.stderr, "in use by a running agent") {
		t.Errorf("recover with the agent running: %d %s %s", r.code, r.stdout, r.stderr)
	}
	if r := h.ctl("acknowledge", journal.TroubleJournalLost); r.code != 0 {
		t.Fatalf("acknowledge: %d %s", r.code, r.stderr)
	}
	// Work is taken again. (The revision installed before the damage is
	// not rebuilt from releases/: its files are unknown to the new
	// journal, so this deploys elsewhere.)
	b2 := h.bundle("tiny2", revision.Revision{Dest: filepath.Join(h.dir, "srv", "tiny2"), Files: map[string]revision.File{"v": {Content: "2"}}})
	if r := h.ctl("deploy", b2, "--wait"); r.code != 0 {
		t.Errorf("deploy after the acknowledgement: %d %s", r.code, r.stderr)
	}
}
