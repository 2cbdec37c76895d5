package install

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/appspec"
	"github.com/rollback-agent/rollback-agent/internal/bundle"
)

// appUID is the application's user in these tests: a uid that owns
// nothing else on the machine.
const appUID = 4711

// rootOnly makes a directory holding a file only root may touch: what an
// attacker would like the agent to delete or overwrite.
func rootOnly(t *testing.T) (dir, file string) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "rootonly")
	os.Mkdir(dir, 0o700)
	file = filepath.Join(dir, "index.html")
	if err := os.WriteFile(file, []byte("root's own\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, file
}

func mustRead(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	return string(b)
}

// The application's user owns www/ (a permission gives it to them) and
// puts a symlink where the previous revision's www/old directory was: the
// next deployment's cleanup must not delete through it (issue 17.8).
func TestCleanupNeverFollowsALinkTheAppUserMade(t *testing.T) {
	h := newHost(t)
	target, secret := rootOnly(t)
	v1 := rev(t, map[string]string{"app/www/old/index.html": "v1 page\n", "app/www/keep.txt": "k"})
	s1 := spec(appspec.File{Source: "app", Destination: h.dest})
	if err := h.install(s1, v1); err != nil {
		t.Fatal(err)
	}
	www := filepath.Join(h.dest, "www")
	os.Chown(www, appUID, appUID)
	// What the app's user can do in a directory they own.
	old := filepath.Join(www, "old")
	os.RemoveAll(old)
	if err := os.Symlink(target, old); err != nil {
		t.Fatal(err)
	}
	os.Lchown(old, appUID, appUID)

	v2 := rev(t, map[string]string{"app/www/keep.txt": "k2"})
	if err := h.install(spec(appspec.File{Source: "app", Destination: h.dest}), v2); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, secret); got != "root's own\n" {
		t.Fatalf("the cleanup deleted or changed %s through the link: %q", secret, got)
	}
	if l, _ := os.Readlink(old); l != target {
		t.Errorf("the app user's link was changed: %q", l)
	}
	if !strings.Contains(strings.Join(h.report.Warnings, "\n"), "left alone what the previous revision installed below "+old+": "+old+" is a symlink to "+target+" (it stands where this agent made a directory)") {
		t.Errorf("warnings: %v", h.report.Warnings)
	}
}

// Variants: a root-owned link in a directory the app user may write (they
// could have swapped root's link for their own), and a link one level up
// (www itself), removing files that are deeper.
func TestCleanupNeverFollowsLinksOthersControl(t *testing.T) {
	for name, plant := range map[string]func(t *testing.T, dest, target string) string{
		"root's link in the app user's directory": func(t *testing.T, dest, target string) string {
			www := filepath.Join(dest, "www")
			os.Chown(www, appUID, appUID)
			old := filepath.Join(www, "old")
			os.RemoveAll(old)
			os.Symlink(target, old)
			return old
		},
		"root's link in a world-writable directory": func(t *testing.T, dest, target string) string {
			www := filepath.Join(dest, "www")
			os.Chmod(www, 0o777)
			old := filepath.Join(www, "old")
			os.RemoveAll(old)
			os.Symlink(target, old)
			return old
		},
		"an ancestor swapped by the app user": func(t *testing.T, dest, target string) string {
			os.Chown(dest, appUID, appUID)
			www := filepath.Join(dest, "www")
			os.RemoveAll(www)
			os.Mkdir(filepath.Join(target, "old"), 0o700)
			os.WriteFile(filepath.Join(target, "old", "index.html"), []byte("root's own\n"), 0o600)
			os.Symlink(target, www)
			os.Lchown(www, appUID, appUID)
			return www
		},
	} {
		t.Run(name, func(t *testing.T) {
			h := newHost(t)
			target, secret := rootOnly(t)
			v1 := rev(t, map[string]string{"app/www/old/index.html": "v1 page\n", "app/www/keep.txt": "k"})
			if err := h.install(spec(appspec.File{Source: "app", Destination: h.dest}), v1); err != nil {
				t.Fatal(err)
			}
			link := plant(t, h.dest, target)
			if err := h.install(spec(appspec.File{Source: "other", Destination: h.dest + "-other"}), rev(t, map[string]string{"other/x": "x"})); err != nil {
				t.Fatal(err)
			}
			if got := mustRead(t, secret); got != "root's own\n" {
				t.Fatalf("deleted through %s: %q", link, got)
			}
			if strings.Contains(name, "ancestor") {
				if got := mustRead(t, filepath.Join(target, "old", "index.html")); got != "root's own\n" {
					t.Fatalf("deleted through the swapped ancestor: %q", got)
				}
			}
			if l, err := os.Readlink(link); err != nil || l != target {
				t.Errorf("link %s: %q %v", link, l, err)
			}
		})
	}
}

// The same class on the way in: a revision that installs where the app
// user put a link never writes through it; the link (where this agent had
// made a directory) is replaced by a directory again.
func TestInstallNeverWritesThroughALinkTheAppUserMade(t *testing.T) {
	h := newHost(t)
	target, secret := rootOnly(t)
	v := rev(t, map[string]string{"app/www/old/index.html": "pwned?\n"})
	s := spec(appspec.File{Source: "app", Destination: h.dest})
	s.FileExistsBehavior = appspec.Overwrite
	if err := h.install(s, v); err != nil {
		t.Fatal(err)
	}
	www := filepath.Join(h.dest, "www")
	os.Chown(www, appUID, appUID)
	old := filepath.Join(www, "old")
	os.RemoveAll(old)
	os.Symlink(target, old)
	os.Lchown(old, appUID, appUID)
	if err := h.install(s, v); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, secret); got != "root's own\n" {
		t.Fatalf("wrote through the link: %q", got)
	}
	if fi, err := os.Lstat(old); err != nil || !fi.IsDir() {
		t.Errorf("%s: %v %v, want a directory again", old, fi, err)
	}
	if got := mustRead(t, filepath.Join(old, "index.html")); got != "pwned?\n" {
		t.Errorf("the revision's file: %q", got)
	}
}

// A hook (root) replaced the destination by a link to where it moved it,
// as magento's AfterInstall swaps directories: the next deployment is not
// blocked (issue 14.5). Nothing is removed or written through the link;
// a directory takes its place and the moved files stay with the hook.
func TestHookReplacedDestinationWithALink(t *testing.T) {
	h := newHost(t)
	app := filepath.Join(h.dest, "app")
	v1 := rev(t, map[string]string{"app/index.html": "v1\n"})
	s := spec(appspec.File{Source: "app", Destination: app})
	if err := h.install(s, v1); err != nil {
		t.Fatal(err)
	}
	real := app + ".real"
	if err := os.Rename(app, real); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("app.real", app); err != nil {
		t.Fatal(err)
	}
	v2 := rev(t, map[string]string{"app/index.html": "v2\n"})
	if err := h.install(s, v2); err != nil {
		t.Fatalf("the next deployment is blocked: %v", err)
	}
	if fi, err := os.Lstat(app); err != nil || !fi.IsDir() {
		t.Fatalf("%s: %v %v", app, fi, err)
	}
	if got := mustRead(t, filepath.Join(app, "index.html")); got != "v2\n" {
		t.Errorf("v2: %q", got)
	}
	if got := mustRead(t, filepath.Join(real, "index.html")); got != "v1\n" {
		t.Errorf("the hook's copy changed: %q", got)
	}
	w := strings.Join(h.report.Warnings, "\n")
	if !strings.Contains(w, app+" is a symlink to app.real") || !strings.Contains(w, "was replaced by a directory again") {
		t.Errorf("warnings: %v", h.report.Warnings)
	}
	// And the manifest now describes the new directory: the one after
	// removes v2's files as usual.
	if err := h.install(s, rev(t, map[string]string{"app/other.html": "v3\n"})); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(app, "index.html")); !os.IsNotExist(err) {
		t.Errorf("v2's file was not removed: %v", err)
	}
}

// root's own link on the way (/var/www -> /data/www, made by root in a
// directory only root writes) is followed, as CodeDeploy's agent follows
// it, both to install and to remove.
func TestRootsOwnLinkIsFollowed(t *testing.T) {
	base := t.TempDir()
	data := filepath.Join(base, "data")
	os.Mkdir(data, 0o755)
	os.Symlink("data", filepath.Join(base, "www"))
	h := &host{t: t, dest: filepath.Join(base, "www", "html"), mdir: t.TempDir()}
	if err := h.install(spec(appspec.File{Source: "app", Destination: h.dest}), rev(t, map[string]string{"app/index.html": "v1\n"})); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, filepath.Join(data, "html", "index.html")); got != "v1\n" {
		t.Fatalf("installed through root's link: %q", got)
	}
	if _, err := Uninstall(t.Context(), []*Manifest{h.last}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(data, "html")); !os.IsNotExist(err) {
		t.Errorf("uninstall through root's link left %v", err)
	}
	// The same destination behind a link the app user owns is refused
	// before anything changes.
	os.Remove(filepath.Join(base, "www"))
	os.Symlink("data", filepath.Join(base, "www"))
	os.Lchown(filepath.Join(base, "www"), appUID, appUID)
	h2 := &host{t: t, dest: filepath.Join(base, "www", "html"), mdir: t.TempDir()}
	err := h2.install(spec(appspec.File{Source: "app", Destination: h2.dest}), rev(t, map[string]string{"app/index.html": "v1\n"}))
	if err == nil || !strings.Contains(err.Error(), "nothing was changed") || !strings.Contains(err.Error(), "belongs to uid 4711") {
		t.Errorf("install through the app user's link: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(data, "html")); !os.IsNotExist(err) {
		t.Errorf("something was installed through it: %v", err)
	}
}

// Two permissions matching one path: CodeDeploy's agent refuses
// ("Duplicate permission setting instructions"), and so does this agent
// (issue 14.7), before anything changes.
func TestOverlappingPermissionsAreRefused(t *testing.T) {
	h := newHost(t)
	r := rev(t, map[string]string{"app/bin/run.sh": "#!/bin/sh", "app/bin/tool": "t"})
	s := spec(appspec.File{Source: "app", Destination: h.dest})
	s.Permissions = []appspec.Permission{
		{Object: h.dest, Pattern: "**", Mode: 0o644, HasMode: true, Types: []string{"file"}, Line: 7},
		{Object: filepath.Join(h.dest, "bin"), Pattern: "*.sh", Mode: 0o755, HasMode: true, Types: []string{"file"}, Line: 11},
	}
	err := h.install(s, r)
	if err == nil || !strings.Contains(err.Error(), "permissions[1] (line 11) and permissions[0] (line 7) both apply to "+filepath.Join(h.dest, "bin/run.sh")) {
		t.Fatalf("overlap: %v", err)
	}
	if _, err := os.Stat(h.dest); err == nil {
		t.Errorf("installed before refusing")
	}
	if _, err := Check(s, r, nil); err == nil || !strings.Contains(err.Error(), "Duplicate permission setting instructions") {
		t.Errorf("Check: %v", err)
	}
}

// CodeDeploy's agent chmods, then chowns; the kernel's chown clears
// setuid. So mode 4755 with an owner installs 0755, as there (issue 14.6);
// the same mode without owner keeps it, and the archive's own setuid
// (copied, chown first) survives as tar -xp and a preserving copy keep it.
func TestSetuidAndPermissionOwner(t *testing.T) {
	h := newHost(t)
	r := rev(t, map[string]string{"app/a": "a", "app/b": "b", "app/c": "c", "app/d/x": "x"})
	os.Chmod(filepath.Join(r, "app/c"), 0o4755)
	digests := map[string]bundle.Entry{
		"app/c": {Path: "app/c", Type: bundle.TypeFile, Mode: 0o755 | fs.ModeSetuid, Size: 1, ModTime: time.Unix(1700000000, 0), Owner: &bundle.Owner{UID: 4711, GID: 4711}},
	}
	s := spec(appspec.File{Source: "app", Destination: h.dest})
	s.Permissions = []appspec.Permission{
		{Object: filepath.Join(h.dest, "a"), Pattern: "**", Mode: 0o4755, HasMode: true, Owner: "nobody", Types: []string{"file"}, Line: 1},
		{Object: filepath.Join(h.dest, "b"), Pattern: "**", Mode: 0o6775, HasMode: true, Types: []string{"file"}, Line: 2},
		{Object: h.dest, Pattern: "d", Mode: 0o2775, HasMode: true, Group: "nogroup", Types: []string{"directory"}, Line: 3},
	}
	mp := filepath.Join(h.mdir, "m")
	if _, err := Install(t.Context(), Options{Spec: s, RevisionDir: r, Digests: digests, ManifestPath: mp}); err != nil {
		t.Fatal(err)
	}
	got := diskTree(t, h.dest)
	for p, want := range map[string]fs.FileMode{
		"a": 0o755,
		"b": 0o775 | fs.ModeSetuid | fs.ModeSetgid,
		"c": 0o755 | fs.ModeSetuid,
		"d": fs.ModeDir | fs.ModeSetgid | 0o775,
	} {
		if got[p].Mode != want {
			t.Errorf("%s: %v, want %v", p, got[p].Mode, want)
		}
	}
	if got["a"].UID != 65534 || got["c"].UID != 4711 {
		t.Errorf("owners: a %d, c %d", got["a"].UID, got["c"].UID)
	}
	// The manifest predicted what the kernel did, so an unchanged file is
	// recognised next time.
	m, _ := ReadManifest(mp)
	for _, e := range m.Entries {
		rel, _ := filepath.Rel(h.dest, e.Path)
		if n, ok := got[rel]; ok && e.Kind == KindFile && e.Mode != n.Mode {
			t.Errorf("%s: manifest mode %v, disk %v", rel, e.Mode, n.Mode)
		}
	}
}

// A tar's owners map by name where the name exists here, by number
// otherwise, as GNU tar run as root does (issue 14.6).
func TestArchiveOwnersMapByName(t *testing.T) {
	h := newHost(t)
	r := rev(t, map[string]string{"app/byname": "1", "app/bynumber": "2", "app/zip": "3", "app/link": "->byname"})
	at := time.Unix(1700000000, 0)
	digests := map[string]bundle.Entry{
		"app/byname":   {Type: bundle.TypeFile, Mode: 0o640, Size: 1, ModTime: at, Owner: &bundle.Owner{UID: 4711, GID: 4711, User: "nobody", Group: "nogroup"}},
		"app/bynumber": {Type: bundle.TypeFile, Mode: 0o600, Size: 1, ModTime: at, Owner: &bundle.Owner{UID: 4712, GID: 4713, User: "no-such-user-here", Group: "no-such-group-here"}},
		"app/zip":      {Type: bundle.TypeFile, Mode: 0o644, Size: 1, ModTime: at},
		"app/link":     {Type: bundle.TypeSymlink, Owner: &bundle.Owner{UID: 4711, GID: 4711}},
	}
	if _, err := Install(t.Context(), Options{Spec: spec(appspec.File{Source: "app", Destination: h.dest}), RevisionDir: r, Digests: digests, ManifestPath: filepath.Join(h.mdir, "m")}); err != nil {
		t.Fatal(err)
	}
	got := diskTree(t, h.dest)
	for p, want := range map[string][2]uint32{"byname": {65534, 65534}, "bynumber": {4712, 4713}, "zip": {0, 0}, "link": {0, 0}} {
		if got[p].UID != want[0] || got[p].GID != want[1] {
			t.Errorf("%s: %d:%d, want %d:%d", p, got[p].UID, got[p].GID, want[0], want[1])
		}
	}
	if got["byname"].Mode != 0o640 || got["bynumber"].Mode != 0o600 {
		t.Errorf("archived modes: %v %v", got["byname"].Mode, got["bynumber"].Mode)
	}
}
