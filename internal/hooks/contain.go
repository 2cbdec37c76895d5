package hooks

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rollback-agent/rollback-agent/internal/mountinfo"
)

// Where hooks' cgroups live. The agent needs a cgroup v2 subtree of its
// own (systemd's rules for delegation, systemd.io/CGROUP_DELEGATION):
//
//   - Under systemd the unit has Delegate=yes, and the agent starts alone
//     in the unit's cgroup S. It moves itself into the leaf S/agent (a
//     delegated cgroup keeps processes in leaves only) and makes hooks'
//     cgroups under S/hooks. After a restart systemd puts the new agent
//     in S again, alone (what the old one left runs in S/agent and
//     S/hooks), and it does the same: the revisions' cgroups are found
//     where they were.
//   - Elsewhere (no systemd, a container, a shell) the agent shares its
//     cgroup C with other processes. It leaves itself where it is and
//     makes hooks' cgroups under C/rollback-agent-<hash of the state
//     directory>: one such directory per agent, found again after a
//     restart from the same cgroup.
//
// Below that root, each revision (release id) has a cgroup, and each
// script run a leaf in it: root/<release>/<deployment>_<event>_<n>. A
// hook's leftovers stay in its leaf when it ends well (they are the
// application), so a rollback finds and ends everything a revision's
// hooks left running by ending the revision's cgroup.
//
// The agent is never in a cgroup it ends: it is in S/agent or in C,
// beside or above the root, and every kill checks it. Where no cgroup v2
// subtree can be had (cgroup v1 only, a read-only cgroup file system, a
// kernel without cgroup.kill), hooks are contained by their process group
// only, as under CodeDeploy's agent, and status and doctor say so.

// Containment says where hooks' cgroups are made, or why none are.
type Containment struct {
	root cgroup // root/<group>/<hook>
	off  string // why hooks are contained by process group only; "" when cgroups are used
}

// GroupReport is what ending a revision's cgroup did.
type GroupReport struct {
	Killed []Proc
	// Survivors are pids still there after SIGKILL (uninterruptible sleep).
	Survivors []int
}

// ProcessGroupsOnly puts no hook in a cgroup: each is contained by its
// process group only, as under CodeDeploy's agent. why says why.
func ProcessGroupsOnly(why string) *Containment { return &Containment{off: why} }

// DetectContainment sets up the cgroups hooks run in, moving the agent
// into a leaf of its own cgroup when it is alone there (a systemd unit
// with Delegate=yes). It never fails: without a cgroup v2 subtree it
// returns ProcessGroupsOnly saying why. Call it before the agent starts
// any process.
func DetectContainment(stateDir string) *Containment {
	c, err := detect(os.Getpid(), stateDir)
	if err != nil {
		return ProcessGroupsOnly(err.Error())
	}
	return c
}

// ContainUnder makes hooks' cgroups under dir, an existing cgroup v2
// directory that does not hold the calling process (tests, and hosts that
// prepare a cgroup for the agent's hooks themselves).
func ContainUnder(dir string) (*Containment, error) {
	mnt, mroot, err := cgroup2Mount()
	if err != nil {
		return nil, err
	}
	rel, err := filepath.Rel(mnt, dir)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return nil, fmt.Errorf("%s is not on the cgroup v2 file system mounted at %s", dir, mnt)
	}
	root := cgroup{dir: dir, path: filepath.Join(mroot, rel)}
	if err := usable(root); err != nil {
		return nil, err
	}
	return &Containment{root: root}, nil
}

// SharedRootName is the name of the cgroup under which an agent whose
// state is in stateDir makes its hooks' cgroups when it shares its own
// cgroup with other processes.
func SharedRootName(stateDir string) string {
	abs, err := filepath.Abs(stateDir)
	if err != nil {
		abs = stateDir
	}
	sum := sha256.Sum256([]byte(abs))
	return "rollback-agent-" + hex.EncodeToString(sum[:6])
}

func detect(pid int, stateDir string) (*Containment, error) {
	mnt, mroot, err := cgroup2Mount()
	if err != nil {
		return nil, err
	}
	self, err := procCgroup(pid)
	if err != nil {
		return nil, fmt.Errorf("the agent has no cgroup v2 path (%w): cgroup v1 only", err)
	}
	own, err := cgroupAt(mnt, mroot, self)
	if err != nil {
		return nil, err
	}
	var root cgroup
	if alone, err := aloneIn(own, pid); err != nil {
		return nil, err
	} else if alone && self != "/" {
		leaf := own.child("agent")
		if err := mkdirCgroup(leaf); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(leaf.dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
			return nil, fmt.Errorf("moving the agent into the leaf cgroup %s: %w", leaf.dir, err)
		}
		root = own.child("hooks")
	} else {
		root = own.child(SharedRootName(stateDir))
	}
	if err := mkdirCgroup(root); err != nil {
		return nil, err
	}
	if err := usable(root); err != nil {
		return nil, err
	}
	c := &Containment{root: root}
	c.tidy()
	return c, nil
}

// usable checks that hooks can be contained under root: the kernel can
// kill a cgroup at once (cgroup.kill, Linux 5.14, which also has clone3
// into a cgroup, 5.7), and the agent itself is not in it.
func usable(root cgroup) error {
	if err := agentOutside(root); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(root.dir, "cgroup.kill")); err != nil {
		if root.path == "/" {
			return fmt.Errorf("%s is the root cgroup, which cannot be killed as a whole (no cgroup.kill): use a cgroup below it", root.dir)
		}
		var u unix.Utsname
		_ = unix.Uname(&u)
		return fmt.Errorf("%s has no cgroup.kill: the kernel (%s) is older than Linux 5.14 (%w)", root.dir, unix.ByteSliceToString(u.Release[:]), err)
	}
	return nil
}

// agentOutside refuses a cgroup that holds the agent: ending it would
// end the agent.
func agentOutside(c cgroup) error {
	self, err := procCgroup(os.Getpid())
	if err != nil {
		return fmt.Errorf("checking that the agent is not in %s: %w", c.dir, err)
	}
	if c.contains(self) {
		return fmt.Errorf("the agent itself is in cgroup %s (its cgroup is %s): ending it would end the agent", c.dir, self)
	}
	return nil
}

func mkdirCgroup(c cgroup) error {
	if err := os.Mkdir(c.dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("creating cgroup %s: %w (a read-only cgroup file system, as in most containers; under systemd the unit needs Delegate=yes)", c.dir, err)
	}
	return nil
}

// aloneIn reports whether pid is the only process directly in c.
func aloneIn(c cgroup, pid int) (bool, error) {
	data, err := os.ReadFile(filepath.Join(c.dir, "cgroup.procs"))
	if err != nil {
		return false, fmt.Errorf("reading %s/cgroup.procs: %w", c.dir, err)
	}
	return strings.TrimSpace(string(data)) == strconv.Itoa(pid), nil
}

// cgroup2Mount finds the cgroup v2 file system in /proc/self/mountinfo:
// where it is mounted and which hierarchy path is at that point.
func cgroup2Mount() (mnt, root string, err error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", "", fmt.Errorf("finding the cgroup v2 file system: %w", err)
	}
	mnt, root, ok := parseCgroup2Mount(data)
	if !ok {
		return "", "", errors.New("no cgroup v2 file system is mounted (cgroup v1 only: boot with systemd.unified_cgroup_hierarchy=1)")
	}
	return mnt, root, nil
}

// parseCgroup2Mount reads mountinfo lines ("36 25 0:31 / /sys/fs/cgroup
// rw,nosuid - cgroup2 cgroup2 rw"): the first cgroup2 mount, preferring
// one that shows the whole hierarchy.
func parseCgroup2Mount(data []byte) (mnt, root string, ok bool) {
	for _, line := range strings.Split(string(data), "\n") {
		pre, post, found := strings.Cut(line, " - ")
		if !found || !strings.HasPrefix(post, "cgroup2 ") {
			continue
		}
		f := strings.Fields(pre)
		if len(f) < 5 {
			continue
		}
		r, m := mountinfo.Unescape(f[3]), mountinfo.Unescape(f[4])
		if !ok || (root != "/" && r == "/") {
			mnt, root, ok = m, r, true
		}
	}
	return mnt, root, ok
}

// cgroupAt returns the directory of hierarchy path p on the mount.
func cgroupAt(mnt, mroot, p string) (cgroup, error) {
	rel, ok := strings.CutPrefix(p, strings.TrimSuffix(mroot, "/"))
	if !ok || (rel != "" && !strings.HasPrefix(rel, "/")) {
		return cgroup{}, fmt.Errorf("the agent's cgroup %s is not visible in the cgroup v2 file system at %s (which shows %s)", p, mnt, mroot)
	}
	return cgroup{dir: filepath.Join(mnt, rel), path: p}, nil
}

// On reports whether hooks run in cgroups.
func (c *Containment) On() bool { return c != nil && c.off == "" }

// Root is the directory hooks' cgroups are made under ("" when off).
func (c *Containment) Root() string {
	if !c.On() {
		return ""
	}
	return c.root.dir
}

// Describe says how hooks are contained, for doctor.
func (c *Containment) Describe() string {
	if c.On() {
		return "each hook runs in a cgroup of its own under " + c.root.dir +
			": a failed or timed-out hook is ended with everything it started, and a rollback ends what the rolled-back revision left running"
	}
	return c.Warning()
}

// Warning is what status says when hooks are not in cgroups ("" when they are).
func (c *Containment) Warning() string {
	if c.On() {
		return ""
	}
	why := "no containment configured"
	if c != nil {
		why = c.off
	}
	return "hooks are contained by their process group only (" + why + "): a process a hook moves out of its group (setsid, a daemon's double fork) " +
		"survives the hook's failure or timeout and a rollback"
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,199}$`)

func (c *Containment) group(name string) (cgroup, error) {
	if !nameRE.MatchString(name) {
		return cgroup{}, fmt.Errorf("%q cannot name a cgroup (letters, digits, - and _ only)", name)
	}
	return c.root.child(name), nil
}

// hookCgroup makes the leaf cgroup of one script run. When it exists
// already, an earlier run of the same script was cut short by the agent's
// death: what that left is ended first (earlier, for the record; warn
// says what went wrong ending it). err means there is no cgroup to use.
func (c *Containment) hookCgroup(group, name string, grace time.Duration) (leaf cgroup, earlier []Proc, warn, err error) {
	g, err := c.group(group)
	if err != nil {
		return cgroup{}, nil, nil, err
	}
	if !nameRE.MatchString(name) {
		return cgroup{}, nil, nil, fmt.Errorf("%q cannot name a cgroup (letters, digits, - and _ only)", name)
	}
	if err := mkdirCgroup(g); err != nil {
		return cgroup{}, nil, nil, err
	}
	leaf = g.child(name)
	err = os.Mkdir(leaf.dir, 0o755)
	if err == nil {
		return leaf, nil, nil, nil
	}
	if !errors.Is(err, fs.ErrExist) {
		return cgroup{}, nil, nil, fmt.Errorf("creating cgroup %s: %w", leaf.dir, err)
	}
	earlier, survivors, warn := leaf.end(grace, killSettle)
	if len(survivors) > 0 {
		warn = errors.Join(warn, fmt.Errorf("processes %v left in %s by an earlier run survived SIGKILL", survivors, leaf.dir))
	}
	return leaf, earlier, warn, nil
}

// Members lists what the hooks of group (a release id) left running.
func (c *Containment) Members(group string) ([]Proc, error) {
	if !c.On() {
		return nil, nil
	}
	g, err := c.group(group)
	if err != nil {
		return nil, err
	}
	pids, err := g.members()
	procs := make([]Proc, 0, len(pids))
	for _, pid := range pids {
		procs = append(procs, procInfo(pid))
	}
	return procs, err
}

// EndGroup ends everything the hooks of group (a release id) left
// running: SIGTERM, up to grace, SIGKILL; then removes its cgroups. It
// returns within grace plus a second, whatever the processes do.
func (c *Containment) EndGroup(group string, grace time.Duration) (GroupReport, error) {
	if !c.On() {
		return GroupReport{}, nil
	}
	g, err := c.group(group)
	if err != nil {
		return GroupReport{}, err
	}
	if err := agentOutside(g); err != nil {
		return GroupReport{}, err
	}
	killed, survivors, err := g.end(grace, killSettle)
	rep := GroupReport{Killed: killed, Survivors: survivors}
	if len(survivors) == 0 {
		err = errors.Join(err, g.remove())
	}
	return rep, err
}

// tidy removes the cgroups of hooks and revisions nothing runs in any
// more (best effort: one with a process in it stays).
func (c *Containment) tidy() {
	groups, _ := os.ReadDir(c.root.dir)
	for _, g := range groups {
		if !g.IsDir() {
			continue
		}
		gc := c.root.child(g.Name())
		leaves, _ := os.ReadDir(gc.dir)
		for _, l := range leaves {
			if l.IsDir() {
				_ = unix.Rmdir(gc.child(l.Name()).dir) // EBUSY while something runs in it
			}
		}
		_ = unix.Rmdir(gc.dir)
	}
}
