package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/testbed/revision"
	"github.com/rollback-agent/rollback-agent/internal/testutil"
)

// Issue 17 item 19: a copy into the inbox that stalls halfway, cut on an
// entry boundary, is a valid tar. A quiet period took it and deployed 19
// of 40 files. The inbox now acts only on files complete by
// construction: renamed in, or matching the manifest beside them.

// startInbox starts an agent watching h.dir/inbox, with extra config, and
// returns the inbox once it is watched (processing/ appears then).
func startInbox(t *testing.T, h *host, extra string) string {
	t.Helper()
	inbox := filepath.Join(h.dir, "inbox")
	h.writeConfig(fmt.Sprintf("checkpoint: {before_deploy: [], required: false}\nboot: {assess: false}\nsources: {inbox: %s}\n", inbox) + extra)
	h.start()
	h.waitFile(30*time.Second, filepath.Join(inbox, "processing"))
	return inbox
}

// fortyFiles is a revision of 40 files installed under dest.
func fortyFiles(dest string) revision.Revision {
	files := map[string]revision.File{}
	for i := 0; i < 40; i++ {
		files[fmt.Sprintf("f%02d", i)] = revision.File{Content: fmt.Sprintf("file %d\n", i)}
	}
	return revision.Revision{Dest: dest, Files: files}
}

// plainTar is the revision as an uncompressed tar, and an offset in it on
// an entry boundary past the appspec, about halfway: the bytes before it
// are a valid tar with fewer files.
func plainTar(t *testing.T, h *host, name string, r revision.Revision) (full []byte, cut int) {
	t.Helper()
	f, err := os.Open(h.bundle(name, r))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	// The appspec first, as bundlers write it, so that a cut keeps it.
	type entry struct {
		hdr  *tar.Header
		body []byte
	}
	var entries []entry
	tr := tar.NewReader(zr)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		e := entry{hdr, body}
		if strings.TrimPrefix(hdr.Name, "./") == "appspec.yml" {
			entries = append([]entry{e}, entries...)
		} else {
			entries = append(entries, e)
		}
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	var bounds []int
	for _, e := range entries {
		if err := tw.WriteHeader(e.hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.body); err != nil {
			t.Fatal(err)
		}
		tw.Flush()
		bounds = append(bounds, buf.Len())
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	cut = bounds[len(bounds)/2]
	if !tarHas(buf.Bytes()[:cut], "appspec.yml") {
		t.Fatal("the cut tar has no appspec: the test would not show the attack")
	}
	return buf.Bytes(), cut
}

func tarHas(b []byte, name string) bool {
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		hdr, err := tr.Next()
		if err != nil {
			return false
		}
		if strings.TrimPrefix(hdr.Name, "./") == name {
			return true
		}
	}
}

// countFiles is how many f* files dest holds.
func countFiles(dest string) int {
	m, _ := filepath.Glob(filepath.Join(dest, "f*"))
	return len(m)
}

// seenAfter drops a non-bundle in place and waits for its refusal: the
// inbox handles its events in order, so it has seen everything before.
func seenAfter(t *testing.T, h *host, inbox, name string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(inbox, name), []byte("not a bundle"), 0o644); err != nil {
		t.Fatal(err)
	}
	h.waitFile(30*time.Second, filepath.Join(inbox, "rejected", name+".reason"))
}

func TestInboxNeverDeploysACopyCutShort(t *testing.T) {
	h := newHost(t, "")
	inbox := startInbox(t, h, "")
	dest := filepath.Join(h.dir, "srv", "forty")
	full, cut := plainTar(t, h, "forty", fortyFiles(dest))

	// A writer copies into the inbox in place and stalls halfway, on an
	// entry boundary, its file still open.
	w, err := os.Create(filepath.Join(inbox, "app.tar"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(full[:cut]); err != nil {
		t.Fatal(err)
	}
	seenAfter(t, h, inbox, "notes-1.txt")
	if _, err := os.Stat(filepath.Join(inbox, "app.tar")); err != nil {
		t.Fatalf("the inbox took a copy in progress: %v", err)
	}
	// The writer dies: the kernel closes its file, cut short. Closed is
	// not complete: refused, with how to drop a bundle.
	w.Close()
	reason := filepath.Join(inbox, "rejected", "app.tar.reason")
	h.waitFile(30*time.Second, reason)
	if b, _ := os.ReadFile(reason); !strings.Contains(string(b), "written in place") || !strings.Contains(string(b), "rename it in") {
		t.Errorf("the reason for a copy written in place: %q", b)
	}
	// A variant: the cut copy written aside and renamed in is complete by
	// construction as far as the inbox can know, and its unpacking is
	// then judged as any bundle's: what a rename proves is the dropper's
	// word that it is whole. Here the whole tar renamed in deploys all 40.
	part := filepath.Join(inbox, "whole.tar.part")
	if err := os.WriteFile(part, full, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(part, filepath.Join(inbox, "whole.tar")); err != nil {
		t.Fatal(err)
	}
	h.waitFile(60*time.Second, filepath.Join(inbox, "processed", "whole.tar.reason"))
	if n := countFiles(dest); n != 40 {
		t.Errorf("deployed %d of 40 files", n)
	}
	list := h.history()
	if len(list) != 1 || !strings.HasSuffix(list[0].Source.Location, "whole.tar") {
		for _, d := range list {
			t.Errorf("deployment %s of %s: %s", d.ID, d.Source.Location, d.Status)
		}
		t.Fatalf("want exactly the renamed-in bundle deployed, got %d deployments", len(list))
	}
}

// The other convention: a manifest beside the bundle gives its size and
// sha256. A copy in place that is short of them waits (it is neither
// taken nor refused while it stalls) and deploys once its bytes are the
// manifest's; a complete-size copy of other bytes is refused.
func TestInboxWaitsForTheBytesItsManifestNames(t *testing.T) {
	h := newHost(t, "")
	s := newSigner(t, h)
	inbox := startInbox(t, h, s.trustConfig())
	dest := filepath.Join(h.dir, "srv", "forty")
	full, err := os.ReadFile(h.bundle("forty", fortyFiles(dest)))
	if err != nil {
		t.Fatal(err)
	}
	s.sign(inbox, "app.tgz.manifest.json", "app.tgz", "v1", full)
	w, err := os.Create(filepath.Join(inbox, "app.tgz"))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	half := len(full) / 2
	if _, err := w.Write(full[:half]); err != nil {
		t.Fatal(err)
	}
	seenAfter(t, h, inbox, "notes-1.txt")
	if _, err := os.Stat(filepath.Join(inbox, "app.tgz")); err != nil {
		t.Fatalf("a copy short of its manifest's size was not left to finish: %v", err)
	}
	if list := h.history(); len(list) != 0 {
		t.Fatalf("deployed from a copy in progress: %+v", list)
	}
	// The copy resumes and ends: its bytes are the manifest's.
	if _, err := w.Write(full[half:]); err != nil {
		t.Fatal(err)
	}
	w.Close()
	h.waitFile(60*time.Second, filepath.Join(inbox, "processed", "app.tgz.reason"))
	if n := countFiles(dest); n != 40 {
		t.Errorf("deployed %d of 40 files", n)
	}

	// Variant: the right size, other bytes (a copy gone wrong, or a swap):
	// refused when its writer closes it, and nothing more deploys.
	s.sign(inbox, "other.tgz.manifest.json", "other.tgz", "v2", full)
	wrong := bytes.Repeat([]byte{0x1f}, len(full))
	copy(wrong, full[:len(full)/3])
	if err := os.WriteFile(filepath.Join(inbox, "other.tgz"), wrong, 0o644); err != nil {
		t.Fatal(err)
	}
	reason := filepath.Join(inbox, "rejected", "other.tgz.reason")
	h.waitFile(30*time.Second, reason)
	if b, _ := os.ReadFile(reason); !strings.Contains(string(b), "tampered or replaced") {
		t.Errorf("the reason for other bytes: %q", b)
	}
	testutil.WaitFor(t, 30*time.Second, "one deployment, succeeded", func() error {
		list := h.history()
		if len(list) != 1 || list[0].Status != "succeeded" {
			return fmt.Errorf("history %+v", list)
		}
		return nil
	})
}
