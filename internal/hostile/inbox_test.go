package hostile

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/engine"
	"github.com/rollback-agent/rollback-agent/internal/source/release"
	"github.com/rollback-agent/rollback-agent/internal/testutil"
)

// inboxDrop says how an inbox case's input arrives in the agent's inbox
// (issue 17 item 19: the inbox must act only on files complete by
// construction, renamed in or matching a manifest beside them).
type inboxDrop struct {
	// Name is the file's name in the inbox. Default: the case's directory
	// name with the input's extension, so that every case's outcome
	// (processing/NAME, rejected/NAME.reason) is its own on the one daemon.
	Name string `yaml:"name"`
	// How: rename (written whole as NAME.part in the inbox, then renamed
	// to NAME), in_place (created as NAME, written whole, closed), stalled
	// (created as NAME, Cut bytes written, then Then), symlink (a link to
	// the committed input, outside the inbox, renamed in as NAME),
	// symlink_in_place (that link made as NAME), hardlink (a second name,
	// NAME, for a whole copy written outside the inbox).
	How string `yaml:"how"`
	// Cut is how many bytes a stalled writer writes before it stalls.
	Cut int `yaml:"cut"`
	// Then ends a stalled write: close (the writer dies, the file stays
	// cut short), finish (the rest is written, then closed), hold (still
	// open when the outcome is checked).
	Then string `yaml:"then"`
	// Manifest, if set, is written into the inbox before the bundle, as
	// the convention says (sidecars first).
	Manifest *inboxManifest `yaml:"manifest"`
}

// inboxManifest is a release manifest (release.Manifest) for the dropped
// bundle, unsigned (the host requires no signature). Every field defaults
// to the truth about the input; a case sets the one it lies about.
type inboxManifest struct {
	// File: default NAME.manifest.json; manifest.json is a release's
	// shared name, which vouches for the bundle its "bundle" field names.
	File    string `yaml:"file"`
	App     string `yaml:"app"`     // default demo, the host's application
	Version string `yaml:"version"` // default v1; names the revision
	Bundle  string `yaml:"bundle"`  // default NAME
	SHA256  string `yaml:"sha256"`  // default the input's
	Size    int64  `yaml:"size"`    // default the input's
}

// name is the file's name in the inbox.
func (d *inboxDrop) name(c *hostileCase) string {
	if d.Name != "" {
		return d.Name
	}
	ext := filepath.Ext(c.Input)
	if strings.HasSuffix(c.Input, ".tar.gz") {
		ext = ".tar.gz"
	}
	return filepath.Base(c.dir) + ext
}

func (d *inboxDrop) check() error {
	switch {
	case d.How == "stalled" && (d.Cut <= 0 || (d.Then != "close" && d.Then != "finish" && d.Then != "hold")):
		return errors.New("drop: stalled wants cut > 0 and then: close | finish | hold")
	case d.How != "stalled" && (d.Cut != 0 || d.Then != ""):
		return errors.New("drop: cut and then are for how: stalled")
	case d.How != "rename" && d.How != "in_place" && d.How != "stalled" && d.How != "symlink" && d.How != "symlink_in_place" && d.How != "hardlink":
		return fmt.Errorf("drop: unknown how %q (rename | in_place | stalled | symlink | symlink_in_place | hardlink)", d.How)
	}
	return nil
}

// manifestDoc is the manifest's file name and bytes for the input data.
func (m *inboxManifest) doc(name string, data []byte) (string, []byte) {
	or := func(v, def string) string {
		if v != "" {
			return v
		}
		return def
	}
	sum := sha256.Sum256(data)
	mf := release.Manifest{SchemaVersion: release.ManifestSchema, App: or(m.App, "demo"), Version: or(m.Version, "v1"),
		Bundle: or(m.Bundle, name), SHA256: or(m.SHA256, hex.EncodeToString(sum[:])), Size: m.Size,
		Format: release.FormatTarGz, CreatedAt: fixedTime, CreatedBy: "hostile corpus"}
	if mf.Size == 0 {
		mf.Size = int64(len(data))
	}
	file := or(m.File, name+"."+release.ManifestName)
	return file, mf.Encode()
}

// runInbox drops the case's input into the running daemon's inbox the
// stated way, with real files, writes and renames, and checks what the
// inbox made of it: a stalled writer's file is neither taken nor refused
// while it stalls; then the input is deployed (accepted, at the expected
// revision), refused with the expected reason in rejected/NAME.reason and
// nothing queued, or left in the inbox untouched (stays). Nothing may be
// written under the sentinel root but an accepted bundle's dest/NAME, and
// the daemon must still answer.
func runInbox(t *testing.T, h *host, c *hostileCase) result {
	r := result{name: c.name, ok: true}
	fail := func(format string, args ...any) {
		t.Errorf(format, args...)
		r.ok = false
	}
	d := c.Drop
	if d == nil {
		t.Fatalf("%s: an inbox case says how it is dropped (drop:)", c.name)
	}
	if err := d.check(); err != nil {
		t.Fatalf("%s: %v", c.name, err)
	}
	how := d.How
	if how == "stalled" {
		how += "/" + d.Then
	}
	r.expected = how + ": " + c.expected()
	resetSentinel(t, c)
	input := c.inputPath(t, t.TempDir())
	data, err := os.ReadFile(input)
	if err != nil {
		t.Fatal(err)
	}
	name := d.name(c)
	inbox := func(n string) string { return filepath.Join(h.inbox, n) }
	before, err := snapshot(sentinelRoot)
	if err != nil {
		t.Fatal(err)
	}
	queued := len(h.deployments(t))

	// What the case leaves in the inbox goes before the next case, whose
	// bundles would otherwise meet a stray manifest.json; a held writer
	// closes after its file is gone, so the inbox never judges it.
	var leftovers []string
	var w *os.File
	defer func() {
		for _, p := range leftovers {
			os.Remove(p)
		}
		if w != nil {
			w.Close()
		}
	}()
	leftovers = append(leftovers, inbox(name), inbox(name+".part"))
	rev := engine.RevisionFromLocation(name)
	if d.Manifest != nil {
		file, doc := d.Manifest.doc(name, data)
		leftovers = append(leftovers, inbox(file))
		if err := os.WriteFile(inbox(file), doc, 0o644); err != nil {
			t.Fatal(err)
		}
		var mf release.Manifest
		if err := json.Unmarshal(doc, &mf); err != nil {
			t.Fatal(err)
		}
		rev = mf.Version
	}

	switch d.How {
	case "rename":
		if err := os.WriteFile(inbox(name+".part"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(inbox(name+".part"), inbox(name)); err != nil {
			t.Fatal(err)
		}
	case "in_place":
		if err := os.WriteFile(inbox(name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	case "symlink":
		if err := os.Symlink(input, inbox(name+".part")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(inbox(name+".part"), inbox(name)); err != nil {
			t.Fatal(err)
		}
	case "symlink_in_place":
		if err := os.Symlink(input, inbox(name)); err != nil {
			t.Fatal(err)
		}
	case "hardlink":
		// Same file system as the inbox (under the host's dir), so link(2)
		// works; the other name stays, writable by whoever made it.
		other := filepath.Join(h.dir, "outside-"+name)
		if err := os.WriteFile(other, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Link(other, inbox(name)); err != nil {
			t.Fatal(err)
		}
	case "stalled":
		if err := checkCut(input, data, d.Cut); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if w, err = os.Create(inbox(name)); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(data[:d.Cut]); err != nil {
			t.Fatal(err)
		}
		// The writer stalls. Once the inbox has seen a later file it has
		// seen this one's creation: it must neither take nor refuse it.
		h.inboxBarrier(t)
		if got, n := h.inboxState(name), len(h.deployments(t)); got != "in the inbox" || n != queued {
			fail("%s: while its writer stalls at %d of %d bytes the file is %s and %d deployment(s) were queued: the inbox acted on a copy in progress",
				c.name, d.Cut, len(data), got, n-queued)
			r.got = "acted while the writer stalled: " + got + " | "
		}
		switch d.Then {
		case "finish":
			if _, err := w.Write(data[d.Cut:]); err != nil {
				t.Fatal(err)
			}
			w.Close()
		case "close":
			w.Close()
		}
	}

	switch {
	case c.Expect.Accepted:
		r.got += h.inboxDeployed(t, c, name, rev, fail)
	case c.Expect.Stays:
		h.inboxBarrier(t)
		got := h.inboxState(name)
		r.got += got
		if got != "in the inbox" {
			fail("%s: want %s left in the inbox, neither taken nor refused; it is %s", c.name, name, got)
		}
	default:
		reason := filepath.Join(h.inbox, "rejected", name+".reason")
		err := testutil.Poll(30*time.Second, func() error {
			if _, err := os.Stat(reason); err != nil {
				return fmt.Errorf("no rejected/%s.reason after 30s: the file is %s", name, h.inboxState(name))
			}
			return nil
		})
		if err != nil {
			fail("%s: %v", c.name, err)
			r.got += err.Error()
			break
		}
		b, _ := os.ReadFile(reason)
		r.got += "refused: " + strings.TrimPrefix(strings.TrimSpace(string(b)), filepath.Join(h.inbox, name)+" ")
		for _, m := range c.Expect.checkText(string(b), "") {
			fail("%s: rejected/%s.reason %s:\n%s", c.name, name, m, b)
		}
		if _, err := os.Lstat(inbox(name)); err == nil {
			fail("%s: refused, but %s is still in the inbox", c.name, name)
		}
	}
	// One drop, at most one deployment: none unless accepted.
	want := 0
	if c.Expect.Accepted {
		want = 1
	}
	if n := len(h.deployments(t)) - queued; n != want {
		fail("%s: %d deployment(s) queued, want %d", c.name, n, want)
		r.got += fmt.Sprintf(" | %d QUEUED", n)
	}
	after, err := snapshot(sentinelRoot)
	if err != nil {
		t.Fatal(err)
	}
	if df := diff(outsideDest(before, c), outsideDest(after, c)); len(df) > 0 {
		fail("%s: WROTE UNDER THE SENTINEL ROOT:\n  %s", c.name, strings.Join(df, "\n  "))
		r.got += " | wrote: " + df[0]
	}
	if err := h.alive(); err != nil {
		fail("%s: daemon down after the case: %v", c.name, err)
		r.got += " | DAEMON DOWN"
	}
	return r
}

// inboxDeployed waits for the deployment of processing/NAME to end and
// checks that it succeeded at revision rev, installed what the case says,
// and that the inbox settled the file in processed/.
func (h *host) inboxDeployed(t *testing.T, c *hostileCase, name, rev string, fail func(string, ...any)) string {
	loc := filepath.Join(h.inbox, "processing", name)
	var dep api.Deployment
	err := testutil.Poll(60*time.Second, func() error {
		for _, d := range h.deployments(t) {
			if d.Source.Type == "inbox" && d.Source.Location == loc && d.Status.Terminal() {
				dep = d
				return nil
			}
		}
		return fmt.Errorf("no finished deployment of %s after 60s: the file is %s", loc, h.inboxState(name))
	})
	if err != nil {
		fail("%s: %v", c.name, err)
		return err.Error()
	}
	got := fmt.Sprintf("deployment %s %s, revision %s", dep.ID, dep.Status, dep.Revision)
	if dep.Status != api.StatusSucceeded {
		fail("%s: deployment %s of %s: %s: %s", c.name, dep.ID, name, dep.Status, dep.Error)
	}
	if dep.Revision != rev {
		fail("%s: deployment %s is revision %q, want %q", c.name, dep.ID, dep.Revision, rev)
	}
	for p, want := range c.Expect.Installed {
		if g := installed(filepath.Join(sentinelRoot, p)); g != want {
			fail("%s: %s is %q, want %q", c.name, p, g, want)
		}
	}
	// The inbox settles the file when it sees the deployment end.
	err = testutil.Poll(30*time.Second, func() error {
		if s := h.inboxState(name); s != "processed" {
			return fmt.Errorf("%s after its deployment ended: %s, want processed", name, s)
		}
		return nil
	})
	if err != nil {
		fail("%s: %v", c.name, err)
		got += " | " + err.Error()
	}
	return got
}

// inboxState says where the inbox put name: still in the inbox, taken
// (processing/, processed/) or refused (rejected/ with a reason).
func (h *host) inboxState(name string) string {
	exists := func(p ...string) bool {
		_, err := os.Lstat(filepath.Join(append([]string{h.inbox}, p...)...))
		return err == nil
	}
	switch {
	case exists("rejected", name+".reason"):
		return "refused"
	case exists("processed", name+".reason"):
		return "processed"
	case exists("processing", name):
		return "taken"
	case exists(name):
		return "in the inbox"
	}
	return "gone"
}

// barriers numbers the inbox barriers, so each has its own name.
var barriers int

// inboxBarrier drops a file that is no bundle in place and waits for its
// refusal. The inbox handles its events one at a time, in order, so once
// this refusal is written every event before it has been handled: what
// has not happened to an earlier file by then is not about to happen.
func (h *host) inboxBarrier(t *testing.T) {
	t.Helper()
	barriers++
	name := fmt.Sprintf("barrier-%d.txt", barriers)
	if err := os.WriteFile(filepath.Join(h.inbox, name), []byte("not a bundle\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, "the inbox to refuse "+name, func() error {
		_, err := os.Stat(filepath.Join(h.inbox, "rejected", name+".reason"))
		return err
	})
}

// deployments is every deployment in the journal, newest first.
func (h *host) deployments(t *testing.T) []api.Deployment {
	t.Helper()
	res := h.ctl("history", "--limit", "0", "-o", "json")
	var list api.DeploymentList
	if res.code != 0 {
		t.Fatalf("agentctl history: exit %d: %s%s", res.code, res.stdout, res.stderr)
	}
	if err := json.Unmarshal([]byte(res.stdout), &list); err != nil {
		t.Fatalf("agentctl history -o json: %v\n%s", err, res.stdout)
	}
	return list.Deployments
}

// checkCut makes sure a stalled tar shows the attack it claims: the bytes
// before the cut must themselves be a valid tar (cut on an entry
// boundary, so unpacking it would succeed) with fewer entries than the
// whole. Other inputs are cut anywhere short of their end.
func checkCut(input string, data []byte, cut int) error {
	if cut >= len(data) {
		return fmt.Errorf("cut %d: the input has only %d bytes", cut, len(data))
	}
	if filepath.Ext(input) != ".tar" {
		return nil
	}
	count := func(b []byte) (int, error) {
		tr := tar.NewReader(bytes.NewReader(b))
		for n := 0; ; n++ {
			if _, err := tr.Next(); err == io.EOF {
				return n, nil
			} else if err != nil {
				return n, err
			}
			if _, err := io.Copy(io.Discard, tr); err != nil {
				return n, err
			}
		}
	}
	part, err := count(data[:cut])
	if err != nil {
		return fmt.Errorf("cut %d is not on an entry boundary (%v): the case would not show a valid partial tar", cut, err)
	}
	whole, err := count(data)
	if err != nil {
		return err
	}
	if part == 0 || part >= whole {
		return fmt.Errorf("cut %d keeps %d of %d entries: want some, not all", cut, part, whole)
	}
	return nil
}
