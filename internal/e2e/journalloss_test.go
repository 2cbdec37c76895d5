package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/journal"
	"github.com/rollback-agent/rollback-agent/internal/testbed"
	"github.com/rollback-agent/rollback-agent/internal/testutil"
)

// Issue 17 item 4: the journal cut to zero bytes (or deleted) must not
// make a new agent that forgets the channel sequences it applied: the
// agent says so (needs_operator, deploys nothing until acknowledged), and
// a replayed older signed channel is refused before and after.
func TestALostJournalIsReportedAndReplayStaysRefused(t *testing.T) {
	r := newReleaseRig(t, "e2e-journal-loss")
	h := r.h
	push := func(version string) {
		t.Helper()
		mustWork(t, r.ctl("push", r.generatedDir(version), "--bucket", r.bucket, "--app", "demo", "--version", version,
			"--sign-key", r.key, "--channel", "prod", "--destination", r.app.Dir), "push "+version)
	}
	push("v1")
	r.waitServing("v1")
	seq1Doc, seq1Sig := r.get("demo/channels/prod.json"), r.get("demo/channels/prod.json.minisig")
	push("v2")
	r.waitServing("v2")

	for _, loss := range []struct {
		name string
		do   func(path string) error
	}{
		{"cut to zero bytes", func(p string) error { return os.Truncate(p, 0) }},
		{"deleted", os.Remove},
	} {
		t.Run(loss.name, func(t *testing.T) {
			h.agent.Stop()
			if err := loss.do(filepath.Join(h.stateDir, journal.FileName)); err != nil {
				t.Fatal(err)
			}
			// Whoever can write the bucket puts the older signed channel back.
			r.put("demo/channels/prod.json.minisig", seq1Sig)
			r.put("demo/channels/prod.json", seq1Doc)
			h.start("AWS_ENDPOINT_URL=" + r.wire.URL)

			st := h.status()
			if st.State != api.StateNeedsOperator || st.Operator == nil || st.Operator.Trouble != journal.TroubleJournalLost ||
				!strings.Contains(st.Operator.What, "vanished or was emptied") || !strings.Contains(st.Summary, "NEEDS OPERATOR") {
				t.Fatalf("status after the loss: state %s, operator %+v, summary %q", st.State, st.Operator, st.Summary)
			}
			// The replay is refused by the sequence kept apart from the journal.
			r.waitWarning("the sequence went backwards, this agent already applied sequence 2")
			// Nothing deploys meanwhile, from any source.
			b := h.bundle("while-lost", testbed.Revision{Dest: filepath.Join(h.dir, "srv", "tiny"), Files: map[string]testbed.File{"v": {Content: "1"}}})
			if res := h.ctl("deploy", b, "--allow-unsigned"); res.code != 1 || !strings.Contains(res.stderr, "agentctl acknowledge journal-lost") {
				t.Errorf("deploy while the journal is lost: exit %d %s", res.code, res.stderr)
			}
			if res := h.ctlAs(asNobody, "acknowledge", "journal-lost"); res.code != 4 {
				t.Errorf("a non-root acknowledge: exit %d, want 4 (denied)", res.code)
			}
			if res := h.ctl("acknowledge", "journal-lost"); res.code != 0 || !strings.Contains(res.stdout, "acknowledged journal-lost") {
				t.Fatalf("acknowledge: exit %d\n%s%s", res.code, res.stdout, res.stderr)
			}
			if st := h.status(); st.State == api.StateNeedsOperator || st.Operator != nil {
				t.Errorf("still needs an operator after acknowledging: %+v", st.Operator)
			}
			// Still refused after acknowledging; the app still serves v2.
			r.waitWarning("went backwards")
			if got := httpGet(r.app.URL()); got != "v2" {
				t.Errorf("the replayed channel rolled the host back: serving %q", got)
			}
		})
	}
	// A real move forward is taken again. (It meets the files of v2 as
	// files the agent did not install: the journal that knew them is
	// gone, as the status said.)
	r.pointAt(3, "v1")
	testutil.WaitFor(t, 60*time.Second, "sequence 3 (v1) queued", func() error {
		for _, d := range historyOf(h) {
			if d.Trigger == "channel" && strings.Contains(d.Source.Location, "seq3") {
				return nil
			}
		}
		return fmt.Errorf("no deployment of sequence 3")
	})
}
