package releases

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/rollback-agent/rollback-agent/internal/appspec"
	"github.com/rollback-agent/rollback-agent/internal/posixacl"
)

// Who may reach a revision. The agent runs hook scripts from the unpacked
// copy, as root unless the appspec says runas, so:
//
//   - everything in it is root's and writable by root alone, whatever the
//     archive's headers said (the bundle package normalises it), and that
//     is checked again before every event's scripts run (CheckExec);
//   - the revision root is 0700, and a revision whose hooks run as other
//     users grants exactly those users read and search access to it, with
//     a POSIX ACL (u:<user>:r-x), so they can run their scripts as under
//     CodeDeploy's agent (issue 14.1); the directories above it (the state
//     directory, releases/, releases/<id>/) are searchable but not
//     readable by others (0711), and everything else in the state
//     directory (journal, downloads, logs, inbox, the releases' records)
//     keeps its own 0700/0600/0750 modes, out of those users' reach.
const (
	storeDirMode   fs.FileMode = 0o711
	releaseDirMode fs.FileMode = 0o711
	privateRoot    fs.FileMode = 0o700
	// sharedRoot is the revision root's mode with an ACL for runas users:
	// the group bits are the ACL's mask (r-x), the owning group gets
	// nothing, others nothing.
	sharedRoot fs.FileMode = 0o750
	// worldRoot is the fallback on a file system without ACLs: readable
	// by every local user, as CodeDeploy's agent leaves all revisions.
	worldRoot  fs.FileMode = 0o755
	recordMode fs.FileMode = 0o600
)

// runAsUsers lists the distinct runas users of spec's hooks, root aside.
func runAsUsers(spec *appspec.AppSpec) []string {
	var out []string
	for _, scripts := range spec.Hooks {
		for _, s := range scripts {
			if s.RunAs != "" && s.RunAs != "root" && !slices.Contains(out, s.RunAs) {
				out = append(out, s.RunAs)
			}
		}
	}
	slices.Sort(out)
	return out
}

// openTo sets who may reach the revision root of release id: nobody but
// root, or root and users. It returns a warning when the file system
// cannot hold an ACL and the revision had to be opened to every local
// user instead.
func (s *Store) openTo(id string, users []string) (string, error) {
	root := s.ArchiveDir(id)
	f, err := os.OpenFile(root, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return "", fmt.Errorf("releases: open %s: %w", root, err)
	}
	defer f.Close()
	fd := int(f.Fd())
	if len(users) == 0 {
		if err := posixacl.RemoveFd(fd, posixacl.XattrAccess); err != nil {
			return "", fmt.Errorf("releases: %s: %w", root, err)
		}
		return "", f.Chmod(privateRoot)
	}
	acl := posixacl.FromMode(sharedRoot)
	for _, name := range users {
		u, err := user.Lookup(name)
		if err != nil {
			return "", fmt.Errorf("releases: runas user %q: %w", name, err)
		}
		uid, err := strconv.ParseUint(u.Uid, 10, 32)
		if err != nil {
			return "", fmt.Errorf("releases: runas user %q has uid %q", name, u.Uid)
		}
		acl = append(acl, posixacl.Entry{Tag: posixacl.User, ID: uint32(uid), Perm: posixacl.Read | posixacl.Execute})
	}
	acl = append(acl, posixacl.Entry{Tag: posixacl.Mask, Perm: posixacl.Read | posixacl.Execute})
	if err := f.Chmod(sharedRoot); err != nil {
		return "", fmt.Errorf("releases: chmod %s: %w", root, err)
	}
	err = posixacl.SetFd(fd, posixacl.XattrAccess, acl)
	if errors.Is(err, unix.EOPNOTSUPP) {
		if err := f.Chmod(worldRoot); err != nil {
			return "", fmt.Errorf("releases: chmod %s: %w", root, err)
		}
		return fmt.Sprintf("the file system of %s has no ACLs: the revision is readable by every local user (as CodeDeploy's agent leaves revisions) so that %s can run their hooks",
			root, strings.Join(users, ", ")), nil
	}
	if err != nil {
		return "", fmt.Errorf("releases: %s: %w", root, err)
	}
	return "", nil
}

// CheckExec verifies, right before hooks of release id run, that no user
// but root can have changed anything they will run or read: the
// directories from / down to the revision, the release's record (which
// names the scripts and their users), and every object of the revision
// must be root's, writable by root alone (a sticky, root-owned directory
// such as /tmp is allowed above the state directory), with no setuid or
// setgid bit and no special files. A revision that fails was tampered
// with, or unpacked by an agent before these rules: its hooks are not run.
func (s *Store) CheckExec(id string) error {
	dir := s.Dir(id)
	if err := checkAncestors(dir); err != nil {
		return fmt.Errorf("releases: refusing to run hooks of release %s: %w", id, err)
	}
	for _, p := range []string{dir, s.metaPath(id)} {
		if err := checkOwned(p, false); err != nil {
			return fmt.Errorf("releases: refusing to run hooks of release %s: %w", id, err)
		}
	}
	err := filepath.WalkDir(s.ArchiveDir(id), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return checkOwned(p, true)
	})
	if err != nil {
		return fmt.Errorf("releases: refusing to run hooks of release %s: %w (deploy it again to get a clean copy, or with --ignore-application-stop-failures when it is the previous revision's)", id, err)
	}
	return nil
}

// checkOwned checks one path (not following a final link).
func checkOwned(p string, inRevision bool) error {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return &fs.PathError{Op: "lstat", Path: p, Err: err}
	}
	typ := st.Mode & unix.S_IFMT
	switch {
	case st.Uid != 0:
		return fmt.Errorf("%s belongs to uid %d: only root may own what the agent runs", p, st.Uid)
	case typ == unix.S_IFLNK:
		return nil // its target is checked where it is reached (scripts), or is data
	case typ != unix.S_IFREG && typ != unix.S_IFDIR:
		return fmt.Errorf("%s is a special file (mode %o)", p, st.Mode)
	case st.Mode&0o022 != 0:
		return fmt.Errorf("%s is writable by others than root (mode %04o)", p, st.Mode&0o7777)
	case inRevision && typ == unix.S_IFREG && st.Mode&(unix.S_ISUID|unix.S_ISGID) != 0:
		return fmt.Errorf("%s is setuid or setgid (mode %04o)", p, st.Mode&0o7777)
	}
	return nil
}

// checkAncestors checks every directory from / down to dir, as written
// and as resolved: root's, and writable by nobody else unless sticky
// (nobody else can then replace root's entries in it). A symlink on the
// way must be root's too; its own directory is on the path, checked.
func checkAncestors(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return err
	}
	for _, path := range []string{abs, real} {
		for p := path; ; p = filepath.Dir(p) {
			var st unix.Stat_t
			if err := unix.Lstat(p, &st); err != nil {
				return &fs.PathError{Op: "lstat", Path: p, Err: err}
			}
			switch {
			case st.Uid != 0:
				return fmt.Errorf("%s belongs to uid %d: only root may own the directories above what the agent runs", p, st.Uid)
			case st.Mode&unix.S_IFMT == unix.S_IFLNK:
			case st.Mode&0o022 != 0 && st.Mode&unix.S_ISVTX == 0:
				return fmt.Errorf("%s is writable by others than root (mode %04o)", p, st.Mode&0o7777)
			}
			if p == "/" {
				break
			}
		}
	}
	return nil
}
