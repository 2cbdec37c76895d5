package install

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/rollback-agent/rollback-agent/internal/appspec"
)

// Tests of the rollback fast path: files left in place, a write-ahead log
// that holds only what was created, lstat results reused. Each shortcut
// must give exactly what a full reinstall gives.

// twoRevisions are 24 shared files, 6 that differ, and 3 only in each.
func twoRevisions(t *testing.T) (v1, v2 string) {
	t.Helper()
	a, b := map[string]string{}, map[string]string{}
	for i := range 24 {
		a[fmt.Sprintf("app/d%d/f%02d", i%4, i)] = fmt.Sprintf("shared %d", i)
		b[fmt.Sprintf("app/d%d/f%02d", i%4, i)] = fmt.Sprintf("shared %d", i)
	}
	for i := range 6 {
		a[fmt.Sprintf("app/d%d/c%d", i%2, i)] = "v1 " + strings.Repeat("x", i)
		b[fmt.Sprintf("app/d%d/c%d", i%2, i)] = "v2 " + strings.Repeat("y", i)
	}
	for i := range 3 {
		a[fmt.Sprintf("app/only1/o%d", i)] = "1"
		b[fmt.Sprintf("app/only2/deep/o%d", i)] = "2"
	}
	a["app/link"], b["app/link"] = "->d0/f00", "->d1/f01"
	return rev(t, a), rev(t, b)
}

// freshTree is what a full install of revDir on a clean host gives.
func freshTree(t *testing.T, revDir string) map[string]node {
	t.Helper()
	h := newHost(t)
	if err := h.install(spec(appspec.File{Source: "app", Destination: h.dest}), revDir); err != nil {
		t.Fatal(err)
	}
	return diskTree(t, h.dest)
}

// Changes made behind the agent's back to files it would keep are found
// (any write, chmod, chown or replacement changes ctime) and undone.
func TestChangesBehindTheAgentsBackAreUndone(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown needs root") // the suite runs as root (README)
	}
	v1, v2 := twoRevisions(t)
	h := newHost(t)
	s := spec(appspec.File{Source: "app", Destination: h.dest})
	for _, r := range []string{v1, v2} {
		if err := h.install(s, r); err != nil {
			t.Fatal(err)
		}
	}
	at := func(p string) string { return filepath.Join(h.dest, p) }
	// Same size, mtime set back to what it was: only ctime tells.
	fi, _ := os.Lstat(at("d0/f04"))
	os.WriteFile(at("d0/f04"), []byte("SHARED 4"), 0o644)
	os.Chtimes(at("d0/f04"), fi.ModTime(), fi.ModTime())
	os.Chmod(at("d1/f05"), 0o600)
	os.Lchown(at("d2/f06"), 1, 1)
	// Replaced by a file of the same content: another inode.
	os.Remove(at("d3/f07"))
	os.WriteFile(at("d3/f07"), []byte("shared 7"), 0o644)
	os.Remove(at("d0/f08"))
	os.WriteFile(at("d1/f09")+tmpSuffix, []byte("a stray temporary name"), 0o644)
	if err := h.install(s, v1); err != nil {
		t.Fatal(err)
	}
	// 6 differ, 3 only in v1, the link, and 5 tampered with.
	if h.report.Copied != 15 {
		t.Errorf("copied %d, want 15: %s", h.report.Copied, h.report)
	}
	got, want := diskTree(t, h.dest), freshTree(t, v1)
	// A stray file that merely has our temporary suffix and is not in any
	// manifest is not ours: it stays, like any other foreign file.
	if _, ok := got["d1/f09"+tmpSuffix]; !ok {
		t.Errorf("a foreign file was removed")
	}
	delete(got, "d1/f09"+tmpSuffix)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("after changes behind its back, the install differs from a fresh one:\n got %v\nwant %v", got, want)
	}
}

// installKilledAfter runs Install and stops it dead after n changes to the
// disk, as SIGKILL would: no deferred cleanup of Install's own, nothing
// buffered written out. It reports whether the Install was stopped.
func installKilledAfter(t *testing.T, o Options, n int) bool {
	t.Helper()
	changes, killed := 0, false
	o.afterChange = func() {
		if changes++; changes == n {
			killed = true
			runtime.Goexit()
		}
	}
	done := make(chan error, 1)
	go func() {
		var err error
		defer func() { done <- err }()
		_, err = Install(context.Background(), o)
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	return killed
}

// changesOf counts the changes to the disk an Install of to over from
// makes, on a twin host.
func changesOf(t *testing.T, from, to string) int {
	t.Helper()
	twin := newHost(t)
	s := spec(appspec.File{Source: "app", Destination: twin.dest})
	if err := twin.install(s, from); err != nil {
		t.Fatal(err)
	}
	n := 0
	if _, err := Install(context.Background(), Options{Spec: s, RevisionDir: to, Previous: []*Manifest{twin.last},
		ManifestPath: filepath.Join(twin.mdir, "count"), afterChange: func() { n++ }}); err != nil {
		t.Fatal(err)
	}
	return n
}

// A rollback killed at any point of its Install, then started over with
// the manifests the install intent names (as the engine's recovery does),
// ends exactly as a fresh install of the target, with no temporary file
// left, and every path it created in the new manifest. Every point: after
// each removal, each temporary file written, each rename into place.
func TestRollbackKilledMidInstallRecovers(t *testing.T) {
	v1, v2 := twoRevisions(t)
	want := freshTree(t, v1)
	for n := 1; n <= changesOf(t, v2, v1); n++ {
		t.Run(fmt.Sprintf("after_%d_changes", n), func(t *testing.T) {
			h := newHost(t)
			s := spec(appspec.File{Source: "app", Destination: h.dest})
			if err := h.install(s, v1); err != nil {
				t.Fatal(err)
			}
			stale := h.last // v1's manifest from its first install
			if err := h.install(s, v2); err != nil {
				t.Fatal(err)
			}
			installed := h.last
			partial := filepath.Join(h.mdir, "partial")
			if !installKilledAfter(t, Options{Spec: s, RevisionDir: v1, Previous: []*Manifest{installed}, ManifestPath: partial}, n) {
				t.Fatalf("the install ended before %d changes", n)
			}
			pm, err := ReadManifest(partial)
			if err != nil {
				t.Fatal(err)
			}
			final := filepath.Join(h.mdir, "final")
			if _, err := Install(context.Background(), Options{Spec: s, RevisionDir: v1, Previous: []*Manifest{installed, stale, pm}, ManifestPath: final}); err != nil {
				t.Fatal(err)
			}
			if got := diskTree(t, h.dest); !reflect.DeepEqual(got, want) {
				t.Errorf("recovered install differs from a fresh one:\n got %v\nwant %v", got, want)
			}
			// Nothing on disk is unaccounted for: uninstalling with the new
			// manifest alone leaves nothing of ours.
			m, err := ReadManifest(final)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Uninstall(context.Background(), []*Manifest{m}); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Lstat(filepath.Dir(h.dest)); !os.IsNotExist(err) {
				t.Errorf("left after uninstall: %v", diskTree(t, filepath.Dir(filepath.Dir(h.dest))))
			}
		})
	}
}

// A deployment killed mid-Install, then the revision rollback that
// reinstalls the last good one with the manifests of both (the ladder's
// first rung after a crash) ends as a fresh install of the last good.
func TestDeployKilledMidInstallThenRolledBack(t *testing.T) {
	v1, v2 := twoRevisions(t)
	want := freshTree(t, v1)
	for n := 1; n <= changesOf(t, v1, v2); n++ {
		t.Run(fmt.Sprintf("after_%d_changes", n), func(t *testing.T) {
			h := newHost(t)
			s := spec(appspec.File{Source: "app", Destination: h.dest})
			if err := h.install(s, v1); err != nil {
				t.Fatal(err)
			}
			installed := h.last
			partial := filepath.Join(h.mdir, "partial")
			if !installKilledAfter(t, Options{Spec: s, RevisionDir: v2, Previous: []*Manifest{installed}, ManifestPath: partial}, n) {
				t.Fatalf("the install ended before %d changes", n)
			}
			pm, err := ReadManifest(partial)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Install(context.Background(), Options{Spec: s, RevisionDir: v1, Previous: []*Manifest{installed, pm}, ManifestPath: filepath.Join(h.mdir, "final")}); err != nil {
				t.Fatal(err)
			}
			if got := diskTree(t, h.dest); !reflect.DeepEqual(got, want) {
				t.Errorf("rollback after a crash differs from a fresh install:\n got %v\nwant %v", got, want)
			}
		})
	}
}

// The log of an Install in progress holds a record of every path it
// created, written before the path was, and nothing for the files left in
// place (the previous manifest has them); the finished manifest has all.
func TestManifestLogHoldsOnlyWhatWasCreated(t *testing.T) {
	v1, v2 := twoRevisions(t)
	// How many changes the install makes, counted on a twin host.
	total := 0
	twin := newHost(t)
	ts := spec(appspec.File{Source: "app", Destination: twin.dest})
	if err := twin.install(ts, v1); err != nil {
		t.Fatal(err)
	}
	rep, err := Install(context.Background(), Options{Spec: ts, RevisionDir: v2, Previous: []*Manifest{twin.last},
		ManifestPath: filepath.Join(twin.mdir, "count"), afterChange: func() { total++ }})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Kept != 24 || len(rep.Manifest.Entries) == 0 {
		t.Fatalf("twin: %s, %d records", rep, len(rep.Manifest.Entries))
	}
	h := newHost(t)
	s := spec(appspec.File{Source: "app", Destination: h.dest})
	if err := h.install(s, v1); err != nil {
		t.Fatal(err)
	}
	partial := filepath.Join(h.mdir, "partial")
	// Killed right after its last change, before finish.
	if !installKilledAfter(t, Options{Spec: s, RevisionDir: v2, Previous: []*Manifest{h.last}, ManifestPath: partial}, total) {
		t.Fatal("the install ended before its last change")
	}
	pm, err := ReadManifest(partial)
	if err != nil {
		t.Fatal(err)
	}
	logged := map[string]bool{}
	for _, e := range pm.Entries {
		logged[e.Path] = true
	}
	for _, e := range rep.Manifest.Entries {
		rel, _ := filepath.Rel(twin.dest, e.Path)
		p := filepath.Join(h.dest, rel)
		shared := strings.Contains(rel, "/f") && e.Kind == KindFile
		switch {
		case shared && logged[p]:
			t.Errorf("%s was left in place but is in the log", rel)
		case !shared && e.Kind != KindDir && !logged[p]:
			t.Errorf("%s was created without a record in the log", rel)
		}
	}
	for _, d := range []string{"only2", "only2/deep"} {
		if !logged[filepath.Join(h.dest, d)] {
			t.Errorf("directory %s was created without a record in the log", d)
		}
	}
}
