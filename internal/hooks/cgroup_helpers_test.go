package hooks

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/testutil"
)

// These helpers read the cgroup file system on their own, not through
// cgroup.go, so that a bug there cannot hide itself.

// testCgroupMount returns where cgroup2 is mounted and the hierarchy path
// of this test process. The machine the tests run on has cgroup v2 (the
// hybrid layout at /sys/fs/cgroup/unified counts); without it the
// containment cannot be tested, which fails the test.
func testCgroupMount(t *testing.T) (mnt, self string) {
	t.Helper()
	for _, line := range strings.Split(readFile(t, "/proc/self/mountinfo"), "\n") {
		if pre, post, ok := strings.Cut(line, " - "); ok && strings.HasPrefix(post, "cgroup2 ") {
			if f := strings.Fields(pre); f[3] == "/" {
				mnt = f[4]
				break
			}
		}
	}
	for _, line := range strings.Split(readFile(t, "/proc/self/cgroup"), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			self = p
		}
	}
	if mnt == "" || self == "" {
		t.Fatalf("no cgroup v2 here (mount %q, own cgroup %q): hook containment cannot be tested", mnt, self)
	}
	return mnt, self
}

// testCgroup makes a fresh cgroup for one test beside this process's own
// and removes it, and everything in it, when the test ends.
func testCgroup(t *testing.T) string {
	t.Helper()
	mnt, self := testCgroupMount(t)
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	dir := filepath.Join(mnt, self, "hooks-test-"+hex.EncodeToString(b))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("creating test cgroup: %v", err)
	}
	t.Cleanup(func() { removeTestCgroup(t, dir) })
	return dir
}

// removeTestCgroup kills everything in dir and removes it with its children.
func removeTestCgroup(t *testing.T, dir string) {
	t.Helper()
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0); err != nil {
		t.Errorf("killing test cgroup %s: %v", dir, err)
	}
	testutil.WaitFor(t, 10*time.Second, dir+" to empty", func() error {
		if ev := readFile(t, filepath.Join(dir, "cgroup.events")); !strings.Contains(ev, "populated 0") {
			return errors.New(ev)
		}
		return nil
	})
	var dirs []string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for _, d := range slices.Backward(dirs) {
		if err := os.Remove(d); err != nil {
			t.Errorf("removing test cgroup: %v", err)
		}
	}
}

// testCgroupOf returns pid's cgroup v2 path, "" when it is gone.
func testCgroupOf(pid int) string {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cgroup"))
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(data), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return p
		}
	}
	return ""
}

// containedSpec is baseSpec with the script in a cgroup of its own under
// a fresh test cgroup; it returns the Containment too.
func containedSpec(t *testing.T, dir, location string) (Spec, *Containment) {
	t.Helper()
	c, err := ContainUnder(testCgroup(t))
	if err != nil {
		t.Fatal(err)
	}
	s := baseSpec(t, dir, location)
	s.Contain, s.Group, s.Name = c, "d-TESTREL01", "d-TESTDEP01_BeforeInstall_0"
	s.KillGrace = 500 * time.Millisecond
	return s, c
}

// killedPIDs returns the pids of ps.
func killedPIDs(ps []Proc) []int {
	pids := make([]int, len(ps))
	for i, p := range ps {
		pids[i] = p.PID
	}
	return pids
}
