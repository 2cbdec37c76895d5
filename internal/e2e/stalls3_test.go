package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/testbed"
)

// Issue 17 item 13: a bundle GET that trickles kept the channel's watcher
// in it forever, and a channel moved to a fixed version was never polled.
// Every S3 download now has an idle timeout and a deadline sized to the
// object, and the channel is polled while a download is in progress.
func TestStalledDownloadsEndAndTheChannelMovesOn(t *testing.T) {
	// An idle timeout the trickle of scenario 1 never reaches (one byte a
	// second), so that only the channel's move can end that download.
	r := newReleaseRig(t, "e2e-stalls", "limits: {download_idle_timeout: 20s, download_min_rate: 16KiB}\n")
	// Straight to the bed: the rig's recorder buffers each answer whole,
	// which would hide a trickle behind missing headers.
	r.h.agent.Stop()
	r.h.start("AWS_ENDPOINT_URL=" + r.bed.AWS.URL)
	push := func(version string) {
		t.Helper()
		mustWork(t, r.ctl("push", r.ownDir(version), "--bucket", r.bucket, "--app", "demo", "--version", version, "--sign-key", r.key, "--destination", r.app.Dir), "push "+version)
	}
	bundle := func(version string) string { return "/" + r.bucket + "/demo/revisions/" + version + "/bundle.tar.gz" }
	gets := func(version string) int {
		n := 0
		for _, c := range r.bed.AWS.Calls() {
			if c.Op.Action == "GET object" && strings.HasSuffix(c.Op.Path, bundle(version)) {
				n++
			}
		}
		return n
	}
	trickle := func(version string, every time.Duration) func() {
		return r.bed.AWS.AddFault(testbed.Fault{Service: "s3", Action: "GET object", PathSuffix: bundle(version), Kind: testbed.FaultTrickle, Burst: 64, Latency: every})
	}
	for _, v := range []string{"v2", "v3", "v4", "v5"} {
		push(v)
	}

	// 1. The channel names v2, whose download trickles; while it does,
	// the channel moves to v3, which is applied.
	stop2 := trickle("v2", time.Second)
	defer stop2()
	r.pointAt(2, "v2")
	r.h.waitFor(60*time.Second, "the download of v2 to start", func() error {
		if gets("v2") == 0 {
			return fmt.Errorf("no GET of %s yet", bundle("v2"))
		}
		return nil
	})
	r.pointAt(3, "v3")
	r.waitServing("v3")
	for _, d := range r.history() {
		if d.Revision == "v2" {
			t.Errorf("the stalled v2 was deployed: %+v", d)
		}
	}

	// 2. A download that trickles forever (a byte a second, never idle
	// for long) ends at its deadline, sized to the object.
	stop4 := trickle("v4", time.Second)
	defer stop4()
	r.pointAt(4, "v4")
	w := r.waitWarning("not downloaded within")
	if !strings.Contains(w, "s3://e2e-stalls/demo/revisions/v4/bundle.tar.gz") || !strings.Contains(w, "limits.download_min_rate") {
		t.Errorf("the deadline's warning: %s", w)
	}

	// 3. A download that stops sending ends at the idle timeout.
	stop5 := trickle("v5", time.Hour)
	defer stop5()
	r.pointAt(5, "v5")
	w = r.waitWarning("limits.download_idle_timeout), after 64 bytes")
	if !strings.Contains(w, "no byte of s3://e2e-stalls/demo/revisions/v5/bundle.tar.gz for 20s") {
		t.Errorf("the idle timeout's warning: %s", w)
	}
	if st := r.h.status(); st.Current == nil || st.Current.Revision != "v3" || st.Operation != nil {
		t.Errorf("after stalled downloads: current %+v, operation %+v", st.Current, st.Operation)
	}

	// S3 well again: the channel's release is fetched and deployed.
	stop2()
	stop4()
	stop5()
	r.waitServing("v5")
	for _, d := range r.history() {
		if d.Revision == "v4" || d.Status != api.StatusSucceeded {
			t.Errorf("deployment %s of %s: %s", d.ID, d.Revision, d.Status)
		}
	}
}
