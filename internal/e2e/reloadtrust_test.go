package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/testbed"
	"github.com/rollback-agent/rollback-agent/internal/testutil"
)

// reload rewrites the config with extra and sends SIGHUP, then waits
// until status shows the new config loaded, or a reload error.
func (h *host) reload(extra string) api.Status {
	h.t.Helper()
	before := h.status().Config.LoadedAt
	h.writeConfig(extra)
	if err := h.agent.Signal(syscall.SIGHUP); err != nil {
		h.t.Fatal(err)
	}
	var st api.Status
	testutil.WaitFor(h.t, 30*time.Second, "the reload's outcome in status", func() error {
		st = h.status()
		if st.Config.ReloadError != "" || st.Config.LoadedAt.After(before) {
			return nil
		}
		return fmt.Errorf("config still loaded at %s", st.Config.LoadedAt)
	})
	return st
}

// Issue 17 item 6: a key removed from trust.public_keys is refused as soon
// as the reload is done, by the channel and by an inbox the same reload
// turned on; a reload whose keys cannot be read is refused loudly and
// changes nothing.
func TestReloadAppliesTrustAndSourcesAtOnce(t *testing.T) {
	r := newReleaseRig(t, "e2e-reload-trust")
	h := r.h
	second := newSigner(t, h)
	push := func(version, key string) {
		t.Helper()
		mustWork(t, r.ctl("push", r.generatedDir(version), "--bucket", r.bucket, "--app", "demo", "--version", version,
			"--sign-key", key, "--channel", "prod", "--destination", r.app.Dir), "push "+version)
	}
	push("v1", r.key)
	r.waitServing("v1")

	// Revoke the first key: only the second one is trusted now, and the
	// same reload turns the inbox on.
	inbox := filepath.Join(h.dir, "inbox")
	sources := fmt.Sprintf("sources: {channel: %q, poll_interval: 1s, inbox: %s}\n", r.channel, inbox)
	revoked := sources + second.trustConfig()
	if st := h.reload(revoked); st.Config.ReloadError != "" {
		t.Fatalf("reload: %s", st.Config.ReloadError)
	}
	// The holder of the revoked key moves the channel.
	push("v2", r.key)
	r.waitWarning("not in trust.public_keys")
	if st := h.status(); st.Current == nil || st.Current.Revision != "v1" {
		t.Errorf("after a release signed by the revoked key, current is %+v", st.Current)
	}

	// The inbox the reload turned on: a drop signed by the revoked key is
	// rejected, one signed by the trusted key deploys.
	first := &signer{t: t, key: r.key}
	drop := func(name, version string, s *signer) {
		t.Helper()
		data, err := os.ReadFile(h.bundle(name, testbed.Revision{Dest: filepath.Join(h.dir, "srv", "inboxed"), Files: map[string]testbed.File{"v": {Content: version}}}))
		if err != nil {
			t.Fatal(err)
		}
		s.sign(inbox, name+".tgz.manifest.json", name+".tgz", version, data)
		os.WriteFile(filepath.Join(inbox, name+".tgz.part"), data, 0o644)
		os.Rename(filepath.Join(inbox, name+".tgz.part"), filepath.Join(inbox, name+".tgz"))
	}
	testutil.WaitFor(t, 30*time.Second, "the inbox made by the reload", func() error {
		_, err := os.Stat(filepath.Join(inbox, "processing"))
		return err
	})
	drop("by-revoked", "r1", first)
	reason := filepath.Join(inbox, "rejected", "by-revoked.tgz.reason")
	testutil.WaitFor(t, 30*time.Second, "the drop signed by the revoked key rejected", func() error {
		_, err := os.Stat(reason)
		return err
	})
	if why, _ := os.ReadFile(reason); !strings.Contains(string(why), "not in trust.public_keys") {
		t.Errorf("reason: %s", why)
	}
	drop("by-trusted", "t1", second)
	testutil.WaitFor(t, 60*time.Second, "the drop signed by the trusted key deployed", func() error {
		if b, _ := os.ReadFile(filepath.Join(h.dir, "srv", "inboxed", "v")); string(b) != "t1" {
			return fmt.Errorf("installed %q", b)
		}
		return nil
	})

	// A reload whose key file cannot be read is refused, loudly, and the
	// trust stays as it was.
	st := h.reload(sources + fmt.Sprintf("trust: {public_keys: [%q], require_signature: true}\n", filepath.Join(h.dir, "no-such.pub")))
	if !strings.Contains(st.Config.ReloadError, "trust.public_keys[0]") || !strings.Contains(st.Config.ReloadError, "previous trust stays in effect") {
		t.Errorf("reload with an unreadable key: %q", st.Config.ReloadError)
	}
	if !strings.Contains(strings.Join(st.Warnings, "\n"), "config reload failed") {
		t.Errorf("no warning of the failed reload: %q", st.Warnings)
	}
	drop("still-trusted", "t2", second)
	testutil.WaitFor(t, 60*time.Second, "the trusted key still trusted after the refused reload", func() error {
		if b, _ := os.ReadFile(filepath.Join(h.dir, "srv", "inboxed", "v")); string(b) != "t2" {
			return fmt.Errorf("installed %q", b)
		}
		return nil
	})
}
