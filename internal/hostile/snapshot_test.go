package hostile

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
)

// sentinelRoot is where the corpus's hostile entries aim (../../ chains,
// absolute names, link targets) and where bundle destinations live. The
// corpus files are static, so the path is fixed; a lock file keeps two
// runs of the suite from sharing it.
const sentinelRoot = "/tmp/rollback-agent-hostile"

// lockSentinel takes the suite-wide lock for the sentinel root.
func lockSentinel(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile(sentinelRoot+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.RemoveAll(sentinelRoot)
		f.Close()
	})
}

// resetSentinel recreates the sentinel root for one case: a file that
// must stay as it is, the case's fresh destination under dest/NAME, a
// FIFO for the request cases, and the case's setup files.
func resetSentinel(t testing.TB, c *hostileCase) {
	t.Helper()
	if err := os.RemoveAll(sentinelRoot); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{sentinelRoot, filepath.Join(sentinelRoot, "dest", filepath.Base(c.dir))} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{"sentinel.txt": "nothing may write here\n"}
	for p, body := range c.Setup {
		files[p] = body
	}
	for p, body := range files {
		full := filepath.Join(sentinelRoot, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Mkfifo(filepath.Join(sentinelRoot, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// snapshot records every path under roots (not following links): type,
// mode, owner, and for files size, mtime and sha256. Directory mtimes are
// left out: the entries themselves show what was added or removed.
func snapshot(roots ...string) (map[string]string, error) {
	out := map[string]string{}
	for _, root := range roots {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if errors.Is(err, fs.ErrNotExist) {
				out[p] = "absent"
				return nil
			}
			if err != nil {
				return err
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			out[p] = describe(p, fi)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func describe(p string, fi fs.FileInfo) string {
	owner := ""
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		owner = fmt.Sprintf(" %d:%d nlink=%d", st.Uid, st.Gid, st.Nlink)
	}
	switch m := fi.Mode(); {
	case m.IsRegular():
		return fmt.Sprintf("file %v%s size=%d mtime=%d sha256=%s", m, owner, fi.Size(), fi.ModTime().UnixNano(), fileHash(p))
	case m&fs.ModeSymlink != 0:
		target, _ := os.Readlink(p)
		return fmt.Sprintf("symlink%s -> %s", owner, target)
	default:
		return fmt.Sprintf("%v%s", m, owner)
	}
}

func fileHash(p string) string {
	f, err := os.Open(p)
	if err != nil {
		return "unreadable: " + err.Error()
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "unreadable: " + err.Error()
	}
	return hex.EncodeToString(h.Sum(nil))
}

// diff lists what changed between two snapshots, one line per path.
func diff(before, after map[string]string) []string {
	var out []string
	for p, a := range after {
		switch b, ok := before[p]; {
		case !ok:
			out = append(out, fmt.Sprintf("appeared: %s (%s)", p, a))
		case a != b:
			out = append(out, fmt.Sprintf("changed: %s: %s => %s", p, b, a))
		}
	}
	for p := range before {
		if _, ok := after[p]; !ok {
			out = append(out, "vanished: "+p)
		}
	}
	sort.Strings(out)
	return out
}

// TestSnapshotSeesChanges proves the "nothing outside staging changed"
// check can fail: each kind of write a hostile bundle could make shows.
func TestSnapshotSeesChanges(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("a", "a")
	write("b", "b")
	write("c", "c")
	if err := os.Symlink("a", filepath.Join(dir, "l")); err != nil {
		t.Fatal(err)
	}
	before, err := snapshot(dir, filepath.Join(dir, "missing"))
	if err != nil {
		t.Fatal(err)
	}
	write("a", "A")                          // content
	os.Chmod(filepath.Join(dir, "b"), 0o600) // mode
	os.Remove(filepath.Join(dir, "c"))       // removal
	os.Remove(filepath.Join(dir, "l"))
	os.Symlink("b", filepath.Join(dir, "l")) // retargeted link
	write("new", "")                         // a new, empty file
	write("missing", "")                     // a path that did not exist
	after, err := snapshot(dir, filepath.Join(dir, "missing"))
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(diff(before, after), "\n")
	for _, want := range []string{"changed: " + dir + "/a:", "changed: " + dir + "/b:", "vanished: " + dir + "/c",
		"changed: " + dir + "/l:", "appeared: " + dir + "/new", "changed: " + dir + "/missing: absent"} {
		if !strings.Contains(got, want) {
			t.Errorf("diff lacks %q:\n%s", want, got)
		}
	}
	if d := diff(after, after); len(d) != 0 {
		t.Errorf("a snapshot differs from itself: %v", d)
	}
}
