package securepath

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// nobody owns what an untrusted user would make.
const nobody = 65534

// base is a safe directory to build cases in: t.TempDir under /tmp (sticky,
// on the way), made 0755 as root's.
func base(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("securepath tests run as root: they chown directories to another user")
	}
	d := t.TempDir()
	for p := d; p != os.TempDir() && p != "/"; p = filepath.Dir(p) {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func mkdir(t *testing.T, path string, mode os.FileMode, uid int) {
	t.Helper()
	if err := os.Mkdir(path, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(path, uid, -1); err != nil {
		t.Fatal(err)
	}
}

func wantUnsafe(t *testing.T, err error, component, why string) {
	t.Helper()
	var ue *UnsafeError
	if !errors.As(err, &ue) {
		t.Fatalf("got %v, want an UnsafeError about %s", err, component)
	}
	if ue.Component != component || !strings.Contains(ue.Error(), why) {
		t.Errorf("got %q (component %s), want component %s and %q", ue.Error(), ue.Component, component, why)
	}
}

func TestSafeDirectories(t *testing.T) {
	b := base(t)
	mkdir(t, filepath.Join(b, "state"), 0o700, 0)
	mkdir(t, filepath.Join(b, "grp"), 0o750, 0)
	if err := os.Chown(filepath.Join(b, "grp"), 0, 4242); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{b, filepath.Join(b, "state"), filepath.Join(b, "grp"), "/"} {
		if err := Check(p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	// A link root made is followed, and its target checked.
	if err := os.Symlink("state", filepath.Join(b, "link")); err != nil {
		t.Fatal(err)
	}
	if err := Check(filepath.Join(b, "link")); err != nil {
		t.Errorf("root's link: %v", err)
	}
}

// The attacks of issue 17 item 2 and their variants: a directory made
// first by a user, a user's link in a sticky directory, a group- or
// world-writable directory on the way or at the end, a write grant by ACL.
func TestUnsafeDirectories(t *testing.T) {
	b := base(t)
	users := filepath.Join(b, "users")
	mkdir(t, users, os.ModeSticky|0o777, 0) // a shared sticky directory, like /tmp
	mkdir(t, filepath.Join(users, "theirs"), 0o755, nobody)
	wantUnsafe(t, Check(filepath.Join(users, "theirs")), filepath.Join(users, "theirs"), "owned by uid 65534")
	// Under a user's directory, even root's directories are not safe.
	mkdir(t, filepath.Join(users, "theirs", "root"), 0o755, 0)
	wantUnsafe(t, Check(filepath.Join(users, "theirs", "root")), filepath.Join(users, "theirs"), "owned by uid 65534")

	// A user's link in the sticky directory, to a safe directory.
	mkdir(t, filepath.Join(b, "etc"), 0o755, 0)
	link := filepath.Join(users, "run")
	if err := os.Symlink(filepath.Join(b, "etc"), link); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(link, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	wantUnsafe(t, Check(link), link, "symbolic link")
	wantUnsafe(t, Check(filepath.Join(link, "sub")), link, "symbolic link")

	// Root's link to a user's directory: the target is checked.
	rootLink := filepath.Join(b, "to-theirs")
	if err := os.Symlink(filepath.Join(users, "theirs"), rootLink); err != nil {
		t.Fatal(err)
	}
	wantUnsafe(t, Check(rootLink), filepath.Join(users, "theirs"), "owned by uid 65534")

	// The sticky directory itself is not a place for state.
	wantUnsafe(t, Check(users), users, "writable by group or others")
	// A group-writable directory on the way.
	gw := filepath.Join(b, "gw")
	mkdir(t, gw, 0o775, 0)
	mkdir(t, filepath.Join(gw, "state"), 0o700, 0)
	wantUnsafe(t, Check(filepath.Join(gw, "state")), gw, "mode 0775")
	// An ACL granting a user write shows in the group bits (the mask).
	acl := filepath.Join(b, "acl")
	mkdir(t, acl, 0o755, 0)
	if out, err := runSetfacl(acl); err != nil {
		t.Fatalf("setfacl: %v %s", err, out)
	}
	wantUnsafe(t, Check(acl), acl, "writable by group or others")
}

func TestOpenCreatesMissingDirectoriesSafely(t *testing.T) {
	b := base(t)
	p := filepath.Join(b, "a", "b", "c")
	f, err := Open(p, 0o750)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, d := range []string{filepath.Join(b, "a"), filepath.Join(b, "a", "b"), p} {
		fi, err := os.Lstat(d)
		if err != nil || !fi.IsDir() {
			t.Fatalf("%s: %v", d, err)
		}
	}
	// Under a user's directory nothing is created.
	users := filepath.Join(b, "users")
	mkdir(t, users, 0o777, nobody)
	if _, err := Open(filepath.Join(users, "x", "y"), 0o750); err == nil {
		t.Fatal("created under a user's directory")
	}
	if _, err := os.Lstat(filepath.Join(users, "x")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("something was created under the user's directory: %v", err)
	}
}

// SetModeGroup changes the socket, not what a link there points to.
func TestSetModeGroupNeverFollowsALink(t *testing.T) {
	b := base(t)
	dir, err := Open(b, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	victim := filepath.Join(b, "victim")
	if err := os.WriteFile(victim, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(b, "agent.sock")); err != nil {
		t.Fatal(err)
	}
	if err := SetModeGroup(dir, "agent.sock", unix.S_IFSOCK, 0o660, 4242); err == nil {
		t.Fatal("SetModeGroup accepted a symbolic link")
	}
	fi, _ := os.Stat(victim)
	if fi.Mode().Perm() != 0o600 || fi.Sys().(*syscall.Stat_t).Gid != 0 {
		t.Errorf("the link's target changed: %v gid %d", fi.Mode(), fi.Sys().(*syscall.Stat_t).Gid)
	}
	os.Remove(filepath.Join(b, "agent.sock"))
	ln, err := net.Listen("unix", filepath.Join(b, "agent.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := SetModeGroup(dir, "agent.sock", unix.S_IFSOCK, 0o660, 4242); err != nil {
		t.Fatal(err)
	}
	fi, _ = os.Lstat(filepath.Join(b, "agent.sock"))
	if fi.Mode().Perm() != 0o660 || fi.Sys().(*syscall.Stat_t).Gid != 4242 {
		t.Errorf("socket mode %v gid %d", fi.Mode(), fi.Sys().(*syscall.Stat_t).Gid)
	}
}

// runSetfacl grants user nobody write by an ACL, leaving the mode's own
// group bits as they were (the mask becomes rwx).
func runSetfacl(dir string) ([]byte, error) {
	return exec.Command("setfacl", "-m", "u:65534:rwx", dir).CombinedOutput()
}
