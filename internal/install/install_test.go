package install

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/appspec"
)

// rev writes a revision tree: path → content ("->target" makes a symlink,
// a trailing "/" a directory).
func rev(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for p, c := range files {
		full := filepath.Join(dir, p)
		if strings.HasSuffix(p, "/") {
			os.MkdirAll(full, 0o755)
			continue
		}
		os.MkdirAll(filepath.Dir(full), 0o755)
		if strings.HasPrefix(c, "->") {
			if err := os.Symlink(strings.TrimPrefix(c, "->"), full); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
		// Fixed mtimes: the same content in two revisions is the same file.
		os.Chtimes(full, time.Unix(1700000000, 0), time.Unix(1700000000, 0))
	}
	return dir
}

type node struct {
	Kind, Content, Target string
	Mode                  fs.FileMode
	UID, GID              uint32
}

// diskTree reads everything under root as it is on disk.
func diskTree(t *testing.T, root string) map[string]node {
	t.Helper()
	out := map[string]node{}
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, _ := os.Lstat(p)
		st := fi.Sys().(*syscall.Stat_t)
		n := node{Kind: kindOf(fi), Mode: fi.Mode(), UID: st.Uid, GID: st.Gid}
		switch n.Kind {
		case KindFile:
			b, _ := os.ReadFile(p)
			h := sha256.Sum256(b)
			n.Content = hex.EncodeToString(h[:8]) + ":" + string(b[:min(len(b), 20)])
		case KindSymlink:
			n.Target, _ = os.Readlink(p)
		}
		out[rel] = n
		return nil
	})
	return out
}

type host struct {
	t      *testing.T
	dest   string
	mdir   string
	last   *Manifest
	n      int
	report *Report
}

func newHost(t *testing.T) *host {
	return &host{t: t, dest: filepath.Join(t.TempDir(), "opt", "app"), mdir: t.TempDir()}
}

// install installs spec from revDir over whatever the last install left.
func (h *host) install(spec *appspec.AppSpec, revDir string) error {
	h.t.Helper()
	h.n++
	mp := filepath.Join(h.mdir, fmt.Sprintf("m%d", h.n))
	rep, err := Install(context.Background(), Options{Spec: spec, RevisionDir: revDir, Previous: []*Manifest{h.last}, ManifestPath: mp})
	h.report = rep
	if err != nil {
		return err
	}
	m, err := ReadManifest(mp)
	if err != nil {
		h.t.Fatal(err)
	}
	h.last = m
	return nil
}

func spec(files ...appspec.File) *appspec.AppSpec {
	return &appspec.AppSpec{Version: "0.0", OS: "linux", Files: files, FileExistsBehavior: appspec.Disallow}
}

func TestCopySemanticsDirectoryFileAndAncestors(t *testing.T) {
	h := newHost(t)
	r := rev(t, map[string]string{
		"app/index.html": "v1", "app/css/site.css": "body{}", "app/current": "->index.html",
		"config/app.conf": "port=1", "appspec.yml": "version: 0.0",
	})
	s := spec(appspec.File{Source: "app", Destination: h.dest}, appspec.File{Source: "config/app.conf", Destination: filepath.Join(h.dest, "etc")})
	if err := h.install(s, r); err != nil {
		t.Fatal(err)
	}
	got := diskTree(t, h.dest)
	// A directory source installs its contents; a file source goes into
	// the destination directory under its own name; symlinks stay links.
	for _, p := range []string{"index.html", "css/site.css", "etc/app.conf"} {
		if got[p].Kind != KindFile {
			t.Errorf("%s: %+v", p, got[p])
		}
	}
	if got["app"].Kind != "" || got["config"].Kind != "" {
		t.Errorf("the source directory itself was recreated: %v", got)
	}
	if got["current"].Kind != KindSymlink || got["current"].Target != "index.html" {
		t.Errorf("symlink not kept: %+v", got["current"])
	}
	// Missing ancestors are created and recorded: the last uninstall
	// removes them again.
	if _, err := Uninstall(context.Background(), []*Manifest{h.last}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Dir(h.dest)); !os.IsNotExist(err) {
		t.Errorf("created ancestor %s left behind: %v", filepath.Dir(h.dest), err)
	}
}

func TestWholeRevisionSourceIncludesAppspec(t *testing.T) {
	h := newHost(t)
	r := rev(t, map[string]string{"appspec.yml": "x", "bin/run": "y"})
	if err := h.install(spec(appspec.File{Source: "/", Destination: h.dest}), r); err != nil {
		t.Fatal(err)
	}
	got := diskTree(t, h.dest)
	if got["appspec.yml"].Kind != KindFile || got["bin/run"].Kind != KindFile {
		t.Errorf("source / installs the whole revision: %v", got)
	}
}

func TestCleanupRemovesPreviousRevisionOnly(t *testing.T) {
	h := newHost(t)
	v1 := rev(t, map[string]string{"app/a.txt": "a", "app/old/gone.txt": "x", "app/shared/s.txt": "s"})
	v2 := rev(t, map[string]string{"app/a.txt": "a2", "app/shared/s.txt": "s"})
	s := spec(appspec.File{Source: "app", Destination: h.dest})
	if err := h.install(s, v1); err != nil {
		t.Fatal(err)
	}
	// A file the deployment did not install, inside a directory it did.
	foreign := filepath.Join(h.dest, "shared", "user-data.txt")
	os.WriteFile(foreign, []byte("mine"), 0o600)
	if err := h.install(s, v2); err != nil {
		t.Fatal(err)
	}
	got := diskTree(t, h.dest)
	if _, ok := got["old"]; ok {
		t.Errorf("directory of the previous revision left behind: %v", got)
	}
	if !strings.Contains(got["a.txt"].Content, "a2") {
		t.Errorf("a.txt not updated: %+v", got["a.txt"])
	}
	if b, _ := os.ReadFile(foreign); string(b) != "mine" {
		t.Errorf("foreign file touched")
	}
}

func TestFileExistsBehavior(t *testing.T) {
	r := rev(t, map[string]string{"app/x.conf": "new", "app/y.conf": "new-y"})
	for _, tc := range []struct {
		behavior string
		wantErr  bool
		wantX    string
	}{
		{appspec.Disallow, true, "old"},
		{appspec.Overwrite, false, "new"},
		{appspec.Retain, false, "old"},
	} {
		t.Run(tc.behavior, func(t *testing.T) {
			h := newHost(t)
			os.MkdirAll(h.dest, 0o755)
			x := filepath.Join(h.dest, "x.conf")
			os.WriteFile(x, []byte("old"), 0o644)
			s := spec(appspec.File{Source: "app", Destination: h.dest})
			s.FileExistsBehavior = tc.behavior
			err := h.install(s, r)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v", err)
			}
			if tc.wantErr {
				if !strings.Contains(err.Error(), x) || !strings.Contains(err.Error(), "nothing was changed") {
					t.Errorf("DISALLOW error should name the path: %v", err)
				}
				if _, err := os.Stat(filepath.Join(h.dest, "y.conf")); err == nil {
					t.Errorf("DISALLOW installed other files before failing")
				}
			}
			if b, _ := os.ReadFile(x); string(b) != tc.wantX {
				t.Errorf("x.conf = %q, want %q", b, tc.wantX)
			}
			if tc.wantErr {
				return
			}
			// OVERWRITE records the file, so the next install removes it;
			// RETAIN does not, so it stays foreign.
			empty := rev(t, map[string]string{"app/": ""})
			if err := h.install(spec(appspec.File{Source: "app", Destination: h.dest}), empty); err != nil {
				t.Fatal(err)
			}
			_, statErr := os.Stat(x)
			if tc.behavior == appspec.Overwrite && statErr == nil {
				t.Errorf("OVERWRITE: the replaced file should be removed by the next deployment")
			}
			if tc.behavior == appspec.Retain && statErr != nil {
				t.Errorf("RETAIN: the kept file must stay foreign: %v", statErr)
			}
		})
	}
}

func TestPermissions(t *testing.T) {
	h := newHost(t)
	r := rev(t, map[string]string{
		"app/bin/run.sh": "#!/bin/sh", "app/bin/tool": "t", "app/conf/a.conf": "a", "app/conf/secret.key": "k",
		"app/conf/sub/deep.conf": "d", "app/single.txt": "s",
	})
	// Sources are 0600, so a file that ends 0644 got it from permissions.
	filepath.WalkDir(r, func(p string, e fs.DirEntry, err error) error {
		if err == nil && e.Type().IsRegular() {
			os.Chmod(p, 0o600)
		}
		return nil
	})
	s := spec(appspec.File{Source: "app", Destination: h.dest})
	nobody := "nobody"
	s.Permissions = []appspec.Permission{
		{Object: filepath.Join(h.dest, "bin"), Pattern: "*.sh", Mode: 0o4755, HasMode: true, Types: []string{"file"}, Line: 1},
		// mode 0644 means 0644 (the literal digits), not decimal 644.
		{Object: filepath.Join(h.dest, "bin"), Pattern: "to*", Mode: 0o644, HasMode: true, Types: []string{"file"}, Line: 2},
		{Object: filepath.Join(h.dest, "conf"), Pattern: "**", Except: []string{"*.key"}, Owner: nobody, Group: "nogroup", Types: []string{"file"}, Line: 3},
		{Object: filepath.Join(h.dest, "conf"), Pattern: "**", Mode: 0o700, HasMode: true, Types: []string{"directory"}, Line: 4},
		{Object: filepath.Join(h.dest, "single.txt"), Pattern: "**", Mode: 0o640, HasMode: true, Types: []string{"file"}, Line: 5},
		{Object: "/nonexistent/x", Pattern: "**", Mode: 0o600, HasMode: true, Types: []string{"file"}, Line: 6},
	}
	if err := h.install(s, r); err != nil {
		t.Fatal(err)
	}
	got := diskTree(t, h.dest)
	check := func(p string, mode fs.FileMode, uid uint32) {
		t.Helper()
		if got[p].Mode != mode || got[p].UID != uid {
			t.Errorf("%s: mode %v uid %d, want %v uid %d", p, got[p].Mode, got[p].UID, mode, uid)
		}
	}
	check("bin/tool", 0o644, 0)
	check("bin/run.sh", 0o755|fs.ModeSetuid, 0)
	check("conf/a.conf", 0o600, 65534)
	check("conf/secret.key", 0o600, 0)        // except
	check("conf/sub/deep.conf", 0o600, 65534) // "**" reaches any depth; except names direct children only
	check("conf/sub", fs.ModeDir|0o700, 0)
	check("single.txt", 0o640, 0)
	if got["bin"].Mode != fs.ModeDir|0o755 {
		t.Errorf("bin/ is not under conf and keeps 0755: %v", got["bin"].Mode)
	}
	if len(h.report.Warnings) != 1 || !strings.Contains(h.report.Warnings[0], "/nonexistent/x") {
		t.Errorf("an object that is not installed is ignored with a warning: %v", h.report.Warnings)
	}
	// pattern with an object that is a file is an error, before anything changes.
	h2 := newHost(t)
	s2 := spec(appspec.File{Source: "app", Destination: h2.dest})
	s2.Permissions = []appspec.Permission{{Object: filepath.Join(h2.dest, "single.txt"), Pattern: "*.txt", Types: []string{"file"}, Line: 9}}
	if err := h2.install(s2, r); err == nil || !strings.Contains(err.Error(), "line 9") {
		t.Errorf("pattern on a file object: %v", err)
	}
	if _, err := os.Stat(h2.dest); err == nil {
		t.Errorf("a permissions error still installed files")
	}
}

// Install only what differs: shared files are left in place (same inode)
// and the result is exactly what a full reinstall gives.
func TestIncrementalInstallEqualsFullReinstall(t *testing.T) {
	files := map[string]string{}
	for i := range 50 {
		files[fmt.Sprintf("app/f%02d.txt", i)] = fmt.Sprintf("same %d", i)
	}
	v1files := map[string]string{"app/changed.txt": "v1", "app/only-v1.txt": "1", "app/link": "->f00.txt"}
	v2files := map[string]string{"app/changed.txt": "v2", "app/only-v2/x.txt": "2", "app/link": "->f01.txt"}
	for k, v := range files {
		v1files[k], v2files[k] = v, v
	}
	v1, v2 := rev(t, v1files), rev(t, v2files)
	s := spec(appspec.File{Source: "app", Destination: ""})

	h := newHost(t)
	s.Files[0].Destination = h.dest
	if err := h.install(s, v1); err != nil {
		t.Fatal(err)
	}
	ino := func(p string) uint64 {
		fi, err := os.Stat(filepath.Join(h.dest, p))
		if err != nil {
			return 0
		}
		return fi.Sys().(*syscall.Stat_t).Ino
	}
	before := ino("f10.txt")
	// Someone edits an installed file: it must be rewritten, not kept.
	os.WriteFile(filepath.Join(h.dest, "f20.txt"), []byte("tampered"), 0o644)
	if err := h.install(s, v2); err != nil {
		t.Fatal(err)
	}
	if h.report.Kept != 49 || h.report.Copied != 4 {
		t.Errorf("report: %s (want 49 kept: 50 shared minus the tampered one; 4 copied: changed, x.txt, link, f20)", h.report)
	}
	if ino("f10.txt") != before {
		t.Errorf("an unchanged file was rewritten")
	}
	fresh := newHost(t)
	s2 := spec(appspec.File{Source: "app", Destination: fresh.dest})
	if err := fresh.install(s2, v2); err != nil {
		t.Fatal(err)
	}
	if a, b := diskTree(t, h.dest), diskTree(t, fresh.dest); !reflect.DeepEqual(a, b) {
		t.Errorf("incremental install differs from a full one:\n%v\n%v", a, b)
	}
	// And back to v1 (a rollback): again equal to a fresh install of v1.
	if err := h.install(spec(appspec.File{Source: "app", Destination: h.dest}), v1); err != nil {
		t.Fatal(err)
	}
	fresh1 := newHost(t)
	if err := fresh1.install(spec(appspec.File{Source: "app", Destination: fresh1.dest}), v1); err != nil {
		t.Fatal(err)
	}
	if a, b := diskTree(t, h.dest), diskTree(t, fresh1.dest); !reflect.DeepEqual(a, b) {
		t.Errorf("rollback install differs from a full one:\n%v\n%v", a, b)
	}
}

// A crash mid-Install leaves a partial manifest; with it, the next
// install cleans up everything, including files the crash left behind.
func TestPartialManifestAfterCrashIsEnough(t *testing.T) {
	h := newHost(t)
	v1 := rev(t, map[string]string{"app/a": "1", "app/b": "1"})
	v2 := rev(t, map[string]string{"app/c": "2", "app/d/e": "2"})
	if err := h.install(spec(appspec.File{Source: "app", Destination: h.dest}), v1); err != nil {
		t.Fatal(err)
	}
	// Simulate the crash: v2's files are on disk, its manifest has the
	// write-ahead records (and a torn last line), v1's cleanup is undone.
	partial := filepath.Join(h.mdir, "partial")
	if _, err := Install(context.Background(), Options{Spec: spec(appspec.File{Source: "app", Destination: h.dest}),
		RevisionDir: v2, Previous: []*Manifest{h.last}, ManifestPath: partial}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(partial)
	os.WriteFile(partial, append(b, []byte(`{"path":"/x","ki`)...), 0o644)
	os.WriteFile(filepath.Join(h.dest, "a"), []byte("1"), 0o644) // as if cleanup had not run
	pm, err := ReadManifest(partial)
	if err != nil {
		t.Fatalf("torn last line: %v", err)
	}
	if _, err := Uninstall(context.Background(), []*Manifest{h.last, pm}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Dir(h.dest)); !os.IsNotExist(err) {
		t.Errorf("leftovers after uninstall with both manifests: %v", diskTree(t, filepath.Dir(h.dest)))
	}
}

func TestDuplicateDestinationsAreRefused(t *testing.T) {
	h := newHost(t)
	r := rev(t, map[string]string{"a/x": "1", "b/x": "2"})
	err := h.install(spec(appspec.File{Source: "a", Destination: h.dest}, appspec.File{Source: "b", Destination: h.dest}), r)
	if err == nil || !strings.Contains(err.Error(), "files[0] and files[1] both install") {
		t.Fatalf("want duplicate error, got %v", err)
	}
	if _, err := os.Stat(h.dest); err == nil {
		t.Errorf("something was installed")
	}
}

func TestTypeConflictIsRefusedBeforeChanges(t *testing.T) {
	h := newHost(t)
	os.MkdirAll(filepath.Join(h.dest, "x"), 0o755)
	r := rev(t, map[string]string{"app/x": "file where a dir is", "app/y": "y"})
	s := spec(appspec.File{Source: "app", Destination: h.dest})
	s.FileExistsBehavior = appspec.Overwrite
	err := h.install(s, r)
	if err == nil || !strings.Contains(err.Error(), "a directory is where") {
		t.Fatalf("want conflict, got %v", err)
	}
	if _, err := os.Stat(filepath.Join(h.dest, "y")); err == nil {
		t.Errorf("installed before failing")
	}
}

func TestACLsApplied(t *testing.T) {
	if _, err := exec.LookPath("getfacl"); err != nil {
		t.Fatalf("getfacl is the independent reader here (make ostools installs the acl package): %v", err)
	}
	h := newHost(t)
	r := rev(t, map[string]string{"app/shared.txt": "x"})
	s := spec(appspec.File{Source: "app", Destination: h.dest})
	s.Permissions = []appspec.Permission{{Object: h.dest, Pattern: "**", Mode: 0o640, HasMode: true, ACLs: []string{"u:nobody:rw"}, Types: []string{"file"}, Line: 1}}
	if err := h.install(s, r); err != nil {
		t.Fatal(err)
	}
	// CodeDeploy's mask is the mode's group bits (issue 14.6): the rw asked
	// for on a 640 file is r-- in effect, as getfacl (the independent
	// reader) shows.
	out, err := execOutput("getfacl", "-c", filepath.Join(h.dest, "shared.txt"))
	if err != nil || !strings.Contains(out, "user:nobody:rw-\t#effective:r--") || !strings.Contains(out, "mask::r--") {
		t.Errorf("getfacl: %v\n%s", err, out)
	}
	if fi, _ := os.Stat(filepath.Join(h.dest, "shared.txt")); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode after the ACL: %v", fi.Mode())
	}
}

func execOutput(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}
