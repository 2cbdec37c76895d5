package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/testbed/revision"
)

// stateDisk is a small ext4 on a loop device for the state dir, mounted
// errors=remount-ro so that an error makes it read-only, as a failing
// disk does.
type stateDisk struct {
	t         *testing.T
	img, dev  string
	mnt       string
	sysfsName string
}

func newStateDisk(t *testing.T, dir string) *stateDisk {
	t.Helper()
	d := &stateDisk{t: t, img: filepath.Join(dir, "state.img"), mnt: filepath.Join(dir, "statefs")}
	run := func(name string, args ...string) string {
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if err := os.Truncate(d.img, 0); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	f, err := os.Create(d.img)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(64 << 20)
	f.Close()
	run("mkfs.ext4", "-q", d.img)
	d.dev = run("losetup", "-f", "--show", d.img)
	d.sysfsName = filepath.Base(d.dev)
	os.MkdirAll(d.mnt, 0o755)
	run("mount", "-o", "errors=remount-ro", d.dev, d.mnt)
	t.Cleanup(func() {
		exec.Command("umount", d.mnt).Run()
		exec.Command("losetup", "-d", d.dev).Run()
	})
	return d
}

// fail makes the filesystem fail: ext4 records an error and, per
// errors=remount-ro, every later write is refused (EROFS).
func (d *stateDisk) fail() {
	d.t.Helper()
	if err := os.WriteFile(filepath.Join("/sys/fs/ext4", d.sysfsName, "trigger_fs_error"), []byte("1"), 0o200); err != nil {
		d.t.Fatalf("trigger an ext4 error on %s: %v", d.dev, err)
	}
}

// repair unmounts, checks and remounts the filesystem read-write, as an
// operator would after fixing the cause.
func (d *stateDisk) repair() {
	d.t.Helper()
	if out, err := exec.Command("umount", d.mnt).CombinedOutput(); err != nil {
		d.t.Fatalf("umount: %v %s", err, out)
	}
	// e2fsck exits 1 when it fixed something (the error flag): fine.
	if out, err := exec.Command("e2fsck", "-fy", d.dev).CombinedOutput(); err != nil {
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() > 1 {
			d.t.Fatalf("e2fsck: %v\n%s", err, out)
		}
	}
	if out, err := exec.Command("mount", "-o", "errors=remount-ro", d.dev, d.mnt).CombinedOutput(); err != nil {
		d.t.Fatalf("mount: %v %s", err, out)
	}
}

// The state disk fails in the middle of a deployment. The agent stops
// before the next step's side effects (its intent cannot be written),
// `deploy --wait` returns saying the host needs an operator, status says
// what to fix, and new work is refused rather than queued forever. Once
// the disk is repaired and the agent restarted, recovery finishes the
// deployment from the journal as it was on disk.
func TestFailingStateDiskStopsTheEngineLoudly(t *testing.T) {
	h := newHost(t, "")
	disk := newStateDisk(t, h.dir)
	h.stateDir = filepath.Join(disk.mnt, "state")
	h.writeConfig("")
	h.start()
	out := filepath.Join(h.dir, "out")
	os.MkdirAll(out, 0o755)
	gate := filepath.Join(out, "gate")
	if err := syscall.Mkfifo(gate, 0o600); err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(h.dir, "srv", "app")
	v1 := h.bundle("v1", revision.Revision{Dest: dest, Files: map[string]revision.File{"v": {Content: "1"}}})
	v2 := h.bundle("v2", revision.Revision{Dest: dest, Files: map[string]revision.File{"v": {Content: "2"}}, Hooks: map[string]string{
		"BeforeInstall": fmt.Sprintf("echo $$ > %s/started; read x < %s", out, gate),
	}})
	if r := h.ctl("deploy", v1, "--wait"); r.code != 0 {
		t.Fatalf("deploy v1: %s%s", r.stdout, r.stderr)
	}
	waited := make(chan result, 1)
	go func() { waited <- h.ctl("deploy", v2, "--wait") }()
	h.waitFile(90e9, filepath.Join(out, "started"))
	id := lastDeployment(h).ID

	disk.fail()
	if err := os.WriteFile(gate, []byte("go\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := <-waited
	if r.code == 0 || !strings.Contains(r.stdout+r.stderr, "NEEDS_OPERATOR") {
		t.Errorf("deploy --wait: exit %d\n%s\n--stderr--\n%s", r.code, r.stdout, r.stderr)
	}
	st := h.status()
	if st.State != api.StateNeedsOperator || st.Operator == nil || !strings.Contains(st.Operator.What, "read-only file system") ||
		!strings.Contains(st.Operator.Next, "fix the state disk") {
		t.Errorf("status: state %s, operator %+v", st.State, st.Operator)
	}
	// The one line systemctl status shows must not say idle either.
	if !strings.Contains(st.Summary, "NEEDS OPERATOR: the agent stopped taking work") {
		t.Errorf("status summary %q", st.Summary)
	}
	if c := h.doctorCheck("journal"); c.Result != api.DoctorFail || !strings.Contains(c.Detail, "read-only file system") || !strings.Contains(c.Fix, "fix the state disk") {
		t.Errorf("doctor while the journal cannot be written: %+v", c)
	}
	if r := h.ctl("deploy", v1); r.code == 0 || !strings.Contains(r.stderr, "stopped taking work") {
		t.Errorf("a new deployment while the journal cannot be written: exit %d %s%s", r.code, r.stdout, r.stderr)
	}
	if b, _ := os.ReadFile(filepath.Join(dest, "v")); string(b) != "1" {
		t.Errorf("the step after the failure ran: v=%q", b)
	}

	h.agent.Stop()
	disk.repair()
	h.start()
	d := h.waitEnd(id)
	if d.Status != api.StatusRolledBack {
		t.Fatalf("after the repair the deployment ended %s: %s", d.Status, d.Error)
	}
	if b, _ := os.ReadFile(filepath.Join(dest, "v")); string(b) != "1" {
		t.Errorf("after recovery v=%q", b)
	}
	if st := h.status(); st.State == api.StateNeedsOperator {
		t.Errorf("still needs an operator after the repair: %+v", st.Operator)
	}
}
