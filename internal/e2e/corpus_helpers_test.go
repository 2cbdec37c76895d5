package e2e

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/posixacl"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/revisions/*/golden.txt from what the agent installs")

// repoPath is a path from the repository root (tests run in internal/e2e).
func repoPath(parts ...string) string {
	return filepath.Join(append([]string{"..", ".."}, parts...)...)
}

// testUser is a real account made for a test with useradd (package passwd,
// on the fresh image) and removed after it: runas and owners need real
// users, as on an EC2 host with ubuntu or ec2-user.
type testUser struct {
	name     string
	uid, gid int
}

func (u testUser) cred() *syscall.Credential {
	return &syscall.Credential{Uid: uint32(u.uid), Gid: uint32(u.gid), Groups: []uint32{}}
}

func makeUser(t *testing.T, name string) testUser {
	t.Helper()
	if _, err := user.Lookup(name); err == nil {
		// A run killed before its cleanup left it.
		exec.Command("userdel", name).Run()
	}
	out, err := exec.Command("useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
		"--shell", "/usr/sbin/nologin", name).CombinedOutput()
	if err != nil {
		t.Fatalf("useradd %s: %v %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("userdel", name).CombinedOutput(); err != nil {
			t.Logf("userdel %s: %v %s", name, err, out)
		}
	})
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return testUser{name: name, uid: uid, gid: gid}
}

// runAs runs argv with the user's credentials and returns its output.
func runAs(t *testing.T, u testUser, argv ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: u.cred()}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// packageStateMode is the state directory's mode as the packages create
// it (packaging/systemd/rollback-agent.tmpfiles), so that tests run with
// the modes a packaged host has.
func packageStateMode(t *testing.T) fs.FileMode {
	t.Helper()
	b, err := os.ReadFile(repoPath("packaging", "systemd", "rollback-agent.tmpfiles"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^d /var/lib/rollback-agent ([0-7]{4}) root root`).FindSubmatch(b)
	if m == nil {
		t.Fatal("no state directory line in the tmpfiles.d entry")
	}
	mode, _ := strconv.ParseUint(string(m[1]), 8, 32)
	return fs.FileMode(mode)
}

// packagedStateDir creates the host's state directory as the package does.
func (h *host) packagedStateDir() {
	h.t.Helper()
	mode := packageStateMode(h.t)
	if err := os.MkdirAll(h.stateDir, mode); err != nil {
		h.t.Fatal(err)
	}
	if err := os.Chmod(h.stateDir, mode); err != nil {
		h.t.Fatal(err)
	}
}

// tarOwner is a tar header's owner for one path of a corpus bundle.
type tarOwner struct {
	uname, gname string
	uid, gid     int
}

// corpusBundle makes a tar.gz of testdata/revisions/NAME/revision, each
// text replaced by vars ({{dest}}, {{user}}), with the modes and owners
// given (others: as on disk, owned by root).
func corpusBundle(t *testing.T, name, out string, vars map[string]string, modes map[string]int64, owners map[string]tarOwner) {
	t.Helper()
	root := repoPath("testdata", "revisions", name, "revision")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	zw := gzip.NewWriter(f)
	tw := tar.NewWriter(zw)
	var paths []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		if p != root {
			paths = append(paths, p)
		}
		return nil
	})
	sort.Strings(paths)
	for _, p := range paths {
		rel, _ := filepath.Rel(root, p)
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		h := &tar.Header{Name: rel, Mode: int64(fi.Mode().Perm()), ModTime: time.Unix(1700000000, 0), Uname: "root", Gname: "root", Format: tar.FormatPAX}
		var body []byte
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			h.Typeflag = tar.TypeSymlink
			h.Linkname, _ = os.Readlink(p)
		case fi.IsDir():
			h.Typeflag, h.Name = tar.TypeDir, rel+"/"
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			s := string(b)
			for k, v := range vars {
				s = strings.ReplaceAll(s, "{{"+k+"}}", v)
			}
			body = []byte(s)
			h.Typeflag, h.Size = tar.TypeReg, int64(len(body))
		}
		if m, ok := modes[rel]; ok {
			h.Mode = m
		}
		if o, ok := owners[rel]; ok {
			h.Uname, h.Gname, h.Uid, h.Gid = o.uname, o.gname, o.uid, o.gid
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write(body)
	}
	for _, c := range []interface{ Close() error }{tw, zw, f} {
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// treeLines describes every path under root, one line each, in the form
// the golden files hold: path, type, mode, owner:group, the access and
// default ACLs when there are any, and a link's target.
func treeLines(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		kind := "file"
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			kind = "link"
		case fi.IsDir():
			kind = "dir"
		}
		mode := uint32(fi.Mode().Perm())
		if fi.Mode()&fs.ModeSetuid != 0 {
			mode |= 0o4000
		}
		if fi.Mode()&fs.ModeSetgid != 0 {
			mode |= 0o2000
		}
		if fi.Mode()&fs.ModeSticky != 0 {
			mode |= 0o1000
		}
		line := fmt.Sprintf("%s %s %04o %s:%s", rel, kind, mode, userName(st.Uid), groupName(st.Gid))
		if kind != "link" {
			for _, a := range []struct{ attr, label string }{{posixacl.XattrAccess, "acl"}, {posixacl.XattrDefault, "default"}} {
				acl, err := posixacl.Lget(p, a.attr)
				if err != nil {
					return err
				}
				if acl != nil {
					line += " " + a.label + "=" + acl.Format(userName, groupName)
				}
			}
		} else {
			target, _ := os.Readlink(p)
			line += " -> " + target
		}
		out = append(out, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func userName(uid uint32) string {
	if u, err := user.LookupId(strconv.Itoa(int(uid))); err == nil {
		return u.Username
	}
	return strconv.Itoa(int(uid))
}

func groupName(gid uint32) string {
	if g, err := user.LookupGroupId(strconv.Itoa(int(gid))); err == nil {
		return g.Name
	}
	return strconv.Itoa(int(gid))
}

// compareGolden compares a tree with testdata/revisions/NAME/golden.txt
// (or rewrites the file with -update).
func compareGolden(t *testing.T, name string, got []string) {
	t.Helper()
	path := repoPath("testdata", "revisions", name, "golden.txt")
	if *updateGolden {
		body := "# " + name + ": the destination tree after each of two deployments (path type mode owner:group [acl] [-> target])\n" + strings.Join(got, "\n") + "\n"
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("%v (make it with -update after checking the tree by hand)", err)
	}
	defer f.Close()
	var want []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := sc.Text(); l != "" && !strings.HasPrefix(l, "#") {
			want = append(want, l)
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("%s: the tree differs from golden.txt\n--- got\n%s\n--- want\n%s", name, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
