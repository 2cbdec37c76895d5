package releases

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/appspec"
	"github.com/rollback-agent/rollback-agent/internal/bundle"
)

type member struct {
	name, body string
	mode       int64
	uid        int
	dir        bool
}

// bundleOf writes a tar the way a developer's machine makes it: owned by
// their uid (4711), and with a "./" entry of the mode they left it.
func bundleOf(t *testing.T, ms ...member) string {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, m := range ms {
		h := &tar.Header{Name: m.name, Mode: m.mode, Uid: m.uid, Gid: m.uid, ModTime: time.Unix(1700000000, 0), Format: tar.FormatPAX}
		if m.dir {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(m.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(m.body))
	}
	tw.Close()
	p := filepath.Join(t.TempDir(), "bundle.tar")
	if err := os.WriteFile(p, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// stateDir is a state directory as the package makes it (0711).
func stateDir(t *testing.T) string {
	t.Helper()
	base := t.TempDir()
	// t.TempDir's parents are 0700: open them as /var/lib is.
	for d := base; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	dir := filepath.Join(base, "state")
	if err := os.Mkdir(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	return dir
}

func developerBundle(t *testing.T, runas string) string {
	spec := "version: 0.0\nos: linux\nhooks:\n  ApplicationStop:\n    - location: scripts/stop.sh\n"
	if runas != "" {
		spec += "      runas: " + runas + "\n"
	}
	return bundleOf(t,
		member{name: "./", mode: 0o777, uid: 4711, dir: true},
		member{name: "./scripts/", mode: 0o777, uid: 4711, dir: true},
		member{name: "./scripts/stop.sh", body: "#!/bin/sh\necho stop\n", mode: 0o775, uid: 4711},
		member{name: "./appspec.yml", body: spec, mode: 0o666, uid: 4711},
	)
}

func unpackValidate(t *testing.T, s *Store, id, bundlePath string) *Release {
	t.Helper()
	if _, err := s.Unpack(context.Background(), id, bundlePath, bundle.Limits{}); err != nil {
		t.Fatal(err)
	}
	rel, err := s.Validate(id, id, appspec.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return rel
}

// A bundle made by uid 4711 with a "./" of mode 777 used to leave its
// scripts writable by the local user 4711, who could then make the next
// deployment's ApplicationStop run their code as root (issue 17.1). The
// release is root's whatever the headers say, and CheckExec refuses a
// release changed since.
func TestReleaseIsRootsWhateverTheHeaders(t *testing.T) {
	s, err := Open(stateDir(t))
	if err != nil {
		t.Fatal(err)
	}
	unpackValidate(t, s, "d-1", developerBundle(t, ""))
	if err := s.CheckExec("d-1"); err != nil {
		t.Fatalf("a fresh release: %v", err)
	}
	err = filepath.Walk(s.Dir("d-1"), func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != 0 || fi.Mode()&0o022 != 0 {
			t.Errorf("%s: %v owned by %d", p, fi.Mode(), st.Uid)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(s.ArchiveDir("d-1")); fi.Mode().Perm() != 0o700 {
		t.Errorf("revision root %v, want 0700 without runas users", fi.Mode())
	}
}

// The class: any change that lets someone else than root write what the
// hooks run is refused before they run.
func TestCheckExecRefusesWhatOthersCouldHaveChanged(t *testing.T) {
	for name, c := range map[string]struct {
		tamper func(s *Store)
		want   string
	}{
		"script owned by a user":       {func(s *Store) { os.Chown(filepath.Join(s.ArchiveDir("d-1"), "scripts/stop.sh"), 4711, 4711) }, "stop.sh belongs to uid 4711"},
		"directory writable by all":    {func(s *Store) { os.Chmod(filepath.Join(s.ArchiveDir("d-1"), "scripts"), 0o777) }, "scripts is writable by others than root (mode 0777)"},
		"script writable by its group": {func(s *Store) { os.Chmod(filepath.Join(s.ArchiveDir("d-1"), "scripts/stop.sh"), 0o775) }, "writable by others than root (mode 0775)"},
		"revision root writable":       {func(s *Store) { os.Chmod(s.ArchiveDir("d-1"), 0o777) }, "archive is writable by others than root"},
		"setuid file":                  {func(s *Store) { syscall.Chmod(filepath.Join(s.ArchiveDir("d-1"), "scripts/stop.sh"), 0o4755) }, "is setuid or setgid"},
		"record owned by a user":       {func(s *Store) { os.Chown(filepath.Join(s.Dir("d-1"), "release.json"), 4711, 4711) }, "release.json belongs to uid 4711"},
		"state directory writable":     {func(s *Store) { os.Chmod(filepath.Dir(s.dir), 0o777) }, "state is writable by others than root (mode 0777)"},
		"a fifo in the revision": {func(s *Store) {
			syscall.Mkfifo(filepath.Join(s.ArchiveDir("d-1"), "scripts/fifo"), 0o600)
		}, "is a special file"},
	} {
		t.Run(name, func(t *testing.T) {
			s, err := Open(stateDir(t))
			if err != nil {
				t.Fatal(err)
			}
			unpackValidate(t, s, "d-1", developerBundle(t, ""))
			c.tamper(s)
			err = s.CheckExec("d-1")
			if err == nil || !strings.Contains(err.Error(), "refusing to run hooks of release d-1") || !strings.Contains(err.Error(), c.want) {
				t.Errorf("CheckExec: %v, want %q", err, c.want)
			}
		})
	}
}

// runAs runs argv as the user and returns its combined output and error.
func runAs(t *testing.T, u *user.User, argv ...string) (string, error) {
	t.Helper()
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// A runas user reaches their own revision (issue 14.1), and nothing else
// of the state directory: not other revisions, not the listing of
// releases/, not the journal, not the releases' records.
func TestRunAsUserReachesTheirRevisionOnly(t *testing.T) {
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatal(err)
	}
	state := stateDir(t)
	os.WriteFile(filepath.Join(state, "journal.db"), []byte("secret"), 0o600)
	s, err := Open(state)
	if err != nil {
		t.Fatal(err)
	}
	rel := unpackValidate(t, s, "d-runas", developerBundle(t, "nobody"))
	unpackValidate(t, s, "d-root", developerBundle(t, ""))
	if len(rel.RunAs) != 1 || rel.RunAs[0] != "nobody" || len(rel.Warnings) != 0 {
		t.Errorf("release: runas %v warnings %v", rel.RunAs, rel.Warnings)
	}
	if err := s.CheckExec("d-runas"); err != nil {
		t.Fatalf("a revision opened to its runas user: %v", err)
	}
	script := filepath.Join(s.ArchiveDir("d-runas"), "scripts/stop.sh")
	if out, err := runAs(t, nobody, script); err != nil || out != "stop\n" {
		t.Errorf("nobody runs their script: %q %v", out, err)
	}
	if out, err := runAs(t, nobody, "/bin/cat", filepath.Join(s.ArchiveDir("d-runas"), "appspec.yml")); err != nil {
		t.Errorf("nobody reads their revision: %q %v", out, err)
	}
	for _, p := range []string{
		filepath.Join(s.ArchiveDir("d-root"), "scripts/stop.sh"),
		filepath.Join(state, "journal.db"),
		filepath.Join(s.Dir("d-runas"), "release.json"),
		filepath.Join(s.Dir("d-runas"), "files.json"),
	} {
		if out, err := runAs(t, nobody, "/bin/cat", p); err == nil {
			t.Errorf("nobody reads %s: %q", p, out)
		}
	}
	for _, d := range []string{state, s.dir, s.Dir("d-runas")} {
		if out, err := runAs(t, nobody, "/bin/ls", d); err == nil {
			t.Errorf("nobody lists %s: %q", d, out)
		}
	}
	if out, err := runAs(t, nobody, "/bin/sh", "-c", "echo x > "+filepath.Join(s.ArchiveDir("d-runas"), "scripts/new")); err == nil {
		t.Errorf("nobody writes in their revision: %q", out)
	}
}

// After journal loss the installed release is the one whose install
// manifest was committed last, whatever order the releases were made in
// (a rollback reinstalls an older one); a release never installed is
// not it, and one whose Install began later and did not complete
// (partial manifest only, newer) is named as interrupted.
func TestFindOnDiskIsTheLastCommittedManifest(t *testing.T) {
	s, err := Open(stateDir(t))
	if err != nil {
		t.Fatal(err)
	}
	if od, err := s.FindOnDisk(); err != nil || od.Installed != nil || od.Interrupted != nil {
		t.Fatalf("empty store: %+v %v", od, err)
	}
	for _, id := range []string{"d-1", "d-2", "d-3", "d-4"} {
		unpackValidate(t, s, id, developerBundle(t, ""))
	}
	partial := func(id string, at time.Time) {
		t.Helper()
		if err := os.WriteFile(s.PartialManifestPath(id), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(s.PartialManifestPath(id), at, at)
	}
	commit := func(id string, at time.Time) {
		t.Helper()
		partial(id, at)
		if err := s.CommitManifest(id, nil); err != nil {
			t.Fatal(err)
		}
	}
	base := time.Now().Add(-time.Hour)
	commit("d-1", base)
	commit("d-2", base.Add(time.Minute))
	commit("d-1", base.Add(2*time.Minute)) // rolled back to d-1
	partial("d-4", base.Add(-time.Minute)) // a stale partial, older than every Install
	od, err := s.FindOnDisk()
	if err != nil || od.Installed == nil || od.Installed.ID != "d-1" || !od.At.Equal(base.Add(2*time.Minute)) || od.Interrupted != nil {
		t.Fatalf("on disk %+v (%v), want d-1 at %v, nothing interrupted", od, err, base.Add(2*time.Minute))
	}
	// d-3's Install was cut short after that: only its partial manifest.
	partial("d-3", base.Add(3*time.Minute))
	if od, err = s.FindOnDisk(); err != nil || od.Installed.ID != "d-1" || od.Interrupted == nil || od.Interrupted.ID != "d-3" {
		t.Fatalf("on disk %+v (%v), want d-1 installed, d-3 interrupted", od, err)
	}
}
