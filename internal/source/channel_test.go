package source

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/source/release"
	"github.com/rollback-agent/rollback-agent/internal/testbed"
)

// A signed release on the channel is verified, downloaded and queued with
// exactly the bytes that were checked; with nothing new, every poll is one
// conditional GET answered 304 with no body.
func TestChannelDeploysVerifiedReleaseAndPollsCheaply(t *testing.T) {
	r := newRig(t, "chan-cheap")
	bundle := bytes.Repeat([]byte("v1 bundle "), 5000)
	m := r.release("demo", "v1", bundle, &r.key)
	r.point(1, "v1", m)
	r.run(r.channel(true, r.jrn))
	reqs := r.waitSubmits(1)
	if got := reqs[0]; got.Revision != "v1" || got.Trigger != "channel" || got.Source.Type != TypeFile ||
		got.Source.Key != r.layout.BundleKey("v1") || got.Source.Size != int64(len(bundle)) {
		t.Errorf("queued %+v", got)
	}
	if !bytes.Equal(r.eng.data[0], bundle) {
		t.Errorf("the queued file is not the bundle")
	}
	st := r.waitState("applied", func(s api.SourceState) bool {
		return strings.Contains(s.Detail, "sequence 1 (version v1) applied as deployment d-1")
	})
	if st.LastError != "" || !st.Enabled {
		t.Errorf("state %+v", st)
	}
	if rec := r.jrn.meta["channel "+r.layout.URL(r.layout.ChannelKey("prod"))]; !strings.Contains(rec, `"sequence":1`) {
		t.Errorf("journal record %q", rec)
	}

	// Nothing new: count the next polls at the proxy and on the wire.
	r.settle(1)
	r.bed.AWS.ResetCounts()
	r.wire.reset()
	before := r.polls()
	r.settle(5)
	polls := r.polls() - before
	statuses, bodies := r.wire.seen()
	gets := r.bed.AWS.Count("s3", "GET object")
	// A poll may be in flight at either end of the window.
	if gets < polls-1 || gets > polls+1 || len(statuses) != gets {
		t.Errorf("%d polls made %d GETs at the proxy, %d requests on the wire; want one per poll", polls, gets, len(statuses))
	}
	for i, s := range statuses {
		if s != 304 || bodies[i] != 0 {
			t.Errorf("idle poll %d: status %d, %d body bytes; want 304 and none", i, s, bodies[i])
		}
	}
	for op, n := range r.bed.AWS.Counts() {
		if op != "s3:GET object" && n > 0 {
			t.Errorf("an idle poll made %d %s", n, op)
		}
	}
	if n := len(r.eng.submitted()); n != 1 {
		t.Errorf("%d deployments queued while nothing changed", n)
	}
}

// Each bad release is refused with a message that says why, nothing is
// queued, the refused document is not fetched again, and a good release
// at a higher sequence is then applied.
func TestChannelRefusesWhatFailsVerification(t *testing.T) {
	r := newRig(t, "chan-refuse")
	_, stranger := newKey(t)
	m1 := r.release("demo", "v1", []byte("v1 bundle"), &r.key)
	oldDoc, oldSig := r.point(1, "v1", m1)
	r.run(r.channel(true, r.jrn))
	r.waitSubmits(1)
	m2 := r.release("demo", "v2", []byte("v2 bundle"), &r.key)
	r.point(2, "v2", m2)
	r.waitSubmits(2)
	seq := int64(2)
	cases := []struct {
		name, want string
		publish    func()
	}{
		{"unknown key", "which is not in trust.public_keys", func() {
			m := r.release("demo", "v-stranger", []byte("stranger"), &stranger)
			seq++
			r.point(seq, "v-stranger", m)
		}},
		{"tampered bundle", "(tampered or replaced)", func() {
			m := r.release("demo", "v-tampered", []byte("the bundle as signed"), &r.key)
			r.put(r.layout.BundleKey("v-tampered"), []byte("the bundle as SWAPPD"))
			seq++
			r.point(seq, "v-tampered", m)
		}},
		{"bundle of another size", "is more than 20 bytes, the manifest says 20", func() {
			m := r.release("demo", "v-longer", []byte("the bundle as signed"), &r.key)
			r.put(r.layout.BundleKey("v-longer"), []byte("the bundle as signed, and then some"))
			seq++
			r.point(seq, "v-longer", m)
		}},
		{"replayed older sequence", "the sequence went backwards, this agent already applied sequence 2 (version v2)", func() {
			// An attacker puts the old, validly signed document of
			// sequence 1 back: a downgrade to v1.
			r.put(r.layout.ChannelKey("prod")+release.SignatureSuffix, oldSig)
			r.put(r.layout.ChannelKey("prod"), oldDoc)
		}},
		{"another app's manifest", `is for app "billing", this agent deploys "demo"`, func() {
			m := r.release("billing", "v-billing", []byte("billing"), &r.key)
			seq++
			r.point(seq, "v-billing", m)
		}},
		{"unsigned manifest", "no signature, and trust.require_signature is true", func() {
			m := r.release("demo", "v-unsigned", []byte("unsigned"), nil)
			seq++
			r.point(seq, "v-unsigned", m)
		}},
	}
	// One rig for all cases, in order (the replay needs what came before):
	// the rig's helpers fail the parent test, so no subtests.
	for _, tc := range cases {
		tc.publish()
		st := r.waitState("refusing "+tc.name, hasErr(tc.want))
		if !strings.HasPrefix(st.LastError, "refused channel s3://chan-refuse/rel/demo/channels/prod.json") {
			t.Errorf("%s: the refusal does not name the channel: %s", tc.name, st.LastError)
		}
		r.settle(2)
		r.bed.AWS.ResetCounts()
		r.settle(3)
		if n := len(r.eng.submitted()); n != 2 {
			t.Fatalf("%s: %d deployments queued, want only v1's and v2's", tc.name, n)
		}
		if n := r.bed.AWS.Count("s3", "GET object"); n > 4 {
			t.Errorf("%s: %d GETs in 3 polls: the refused release is fetched again", tc.name, n)
		}
		if last := r.snapshot(); !strings.Contains(last[len(last)-1].LastError, tc.want) {
			t.Errorf("%s: the refusal left the status", tc.name)
		}
	}
	m3 := r.release("demo", "v3", []byte("v3 bundle"), &r.key)
	r.point(seq+1, "v3", m3)
	reqs := r.waitSubmits(3)
	if reqs[2].Revision != "v3" {
		t.Errorf("after the refusals, queued %+v", reqs[2])
	}
	if st := r.waitState("v3 applied", func(s api.SourceState) bool { return strings.Contains(s.Detail, "version v3") }); st.LastError != "" {
		t.Errorf("the refusal stayed after a good release: %+v", st)
	}
}

// A restarted watcher remembers the applied sequence: it does not queue
// the same release again, and its first poll is already conditional.
func TestChannelRestartDoesNotRedeploy(t *testing.T) {
	r := newRig(t, "chan-restart")
	m := r.release("demo", "v1", []byte("v1"), &r.key)
	r.point(1, "v1", m)
	first := r.channel(true, r.jrn)
	r.run(first)
	r.waitSubmits(1)
	r.waitState("applied", func(s api.SourceState) bool { return strings.Contains(s.Detail, "applied") })

	r.wire.reset()
	again := r.channel(true, r.jrn)
	r.run(again)
	r.settle(4)
	if n := len(r.eng.submitted()); n != 1 {
		t.Errorf("%d deployments after a restart, want 1", n)
	}
	if statuses, _ := r.wire.seen(); len(statuses) == 0 || statuses[len(statuses)-1] != 304 {
		t.Errorf("after a restart the polls answered %v, want 304s", statuses)
	}
	if st := again.State(); !strings.Contains(st.Detail, "sequence 1 (version v1) applied") {
		t.Errorf("restarted state %+v", st)
	}
}

// Without trust.require_signature an unsigned release is accepted, and
// status says it was unsigned.
func TestChannelUnsignedWhenNotRequired(t *testing.T) {
	r := newRig(t, "chan-unsigned")
	m := r.release("demo", "v1", []byte("v1"), nil)
	r.point(1, "v1", m)
	_, err := r.setup.DeleteObject(t.Context(), deleteInput(r.layout.Bucket, r.layout.ChannelKey("prod")+release.SignatureSuffix))
	if err != nil {
		t.Fatal(err)
	}
	r.run(r.channel(false, r.jrn))
	r.waitSubmits(1)
	r.waitState("unsigned noted", func(s api.SourceState) bool { return strings.Contains(s.Detail, "unsigned") })
}

// S3 trouble keeps the current revision, is shown in status with the
// retry, backs off, and ends by itself when S3 answers again.
func TestChannelOutageBacksOffAndRecovers(t *testing.T) {
	r := newRig(t, "chan-outage")
	m := r.release("demo", "v1", []byte("v1"), &r.key)
	r.point(1, "v1", m)
	remove := r.bed.AWS.AddFault(testbed.Fault{Service: "s3", Action: "GET object", Kind: testbed.FaultServerError})
	r.run(r.channel(true, r.jrn))
	st := r.waitState("an outage", func(s api.SourceState) bool {
		return strings.Contains(s.Detail, "S3 unreachable since") && strings.Contains(s.Detail, "(2 failed polls)")
	})
	if !strings.Contains(st.LastError, "GET s3://chan-outage/rel/demo/channels/prod.json") || !strings.Contains(st.Detail, "the current revision stays") {
		t.Errorf("outage state %+v", st)
	}
	if n := len(r.eng.submitted()); n != 0 {
		t.Errorf("queued during an outage")
	}
	remove()
	r.waitSubmits(1)
	if st := r.waitState("recovered", func(s api.SourceState) bool { return s.LastError == "" && strings.Contains(s.Detail, "applied") }); strings.Contains(st.Detail, "unreachable") {
		t.Errorf("recovered state %+v", st)
	}
}

// The wait after failures grows to a cap and comes back to the interval;
// each wait is jittered within ±20%.
func TestChannelBackoff(t *testing.T) {
	r := newRig(t, "chan-backoff")
	c := r.channel(true, r.jrn)
	iv := 100 * time.Millisecond
	within := func(d, want time.Duration) bool {
		return d >= want*8/10 && d <= want*12/10
	}
	for i, want := range []time.Duration{iv, 2 * iv, 4 * iv, 8 * iv, 8 * iv, 8 * iv} {
		if d := c.afterPoll(errors.New("down")); !within(d, want) {
			t.Errorf("failure %d: wait %s, want %s ±20%%", i+1, d, want)
		}
	}
	if d := c.afterPoll(nil); !within(d, iv) {
		t.Errorf("after recovery: wait %s, want %s", d, iv)
	}
	if st := c.State(); st.LastError != "" || strings.Contains(st.Detail, "unreachable") {
		t.Errorf("state after recovery %+v", st)
	}
}
