package packaging_test

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// systemctlStub stands in for systemctl, which cannot work without systemd
// as PID 1. It records every call in <root>/var/log/systemctl-stub.log and
// keeps enabled/active state, and works both inside the root (rpm and dpkg
// run scriptlets chrooted, where only the shell's builtins exist) and from
// outside it (install.sh runs it as $ROOT/usr/bin/systemctl).
const systemctlStub = `#!/bin/sh
r=${0%/bin/systemctl}
r=${r%/usr}
echo "$*" >>"$r/var/log/systemctl-stub.log"
st="$r/run/systemctl-stub"
verb=""
for a in "$@"; do
	case "$a" in -*) ;; *) if [ -z "$verb" ]; then verb=$a; fi ;; esac
done
is() { v=no; if [ -f "$st/$1" ]; then read -r v <"$st/$1"; fi; [ "$v" = yes ]; }
case "$verb" in
enable) echo yes >"$st/enabled" ;;
disable) echo no >"$st/enabled" ;;
start | restart) echo yes >"$st/active" ;;
try-restart) ;;
stop) echo no >"$st/active" ;;
is-enabled) is enabled || exit 1 ;;
is-active) is active || exit 3 ;;
is-failed) exit 1 ;;
daemon-reload) ;;
*) echo "systemctl stub: $verb not understood" >&2; exit 1 ;;
esac
exit 0
`

// newRoot makes a scratch root for rpm --root and dpkg --root: the host's
// /bin -> usr/bin style links, /dev/null, /proc (systemd-tmpfiles needs
// it), and the real sh, systemd-sysusers and systemd-tmpfiles with their
// libraries, so the package scripts run for real when chrooted; plus the
// systemctl stub and empty rpm and dpkg databases.
func newRoot(t *testing.T) string {
	t.Helper()
	need(t, "ldd", "rpm", "dpkg", "systemd-sysusers", "systemd-tmpfiles")
	r := t.TempDir()
	for _, d := range []string{"usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "etc", "dev", "proc", "tmp", "var/log", "var/tmp", "run/systemctl-stub", "var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers"} {
		if err := os.MkdirAll(filepath.Join(r, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range []string{"bin", "sbin", "lib", "lib64"} {
		if target, err := os.Readlink("/" + l); err == nil {
			if err := os.Symlink(target, filepath.Join(r, l)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := unix.Mknod(filepath.Join(r, "dev/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatalf("mknod /dev/null in the scratch root: %v", err)
	}
	if err := os.Chmod(filepath.Join(r, "dev/null"), 0o666); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("proc", filepath.Join(r, "proc"), "proc", 0, ""); err != nil {
		t.Fatalf("mount /proc in the scratch root: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(filepath.Join(r, "proc"), unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s/proc: %v", r, err)
		}
	})
	sh, err := exec.LookPath("dash")
	if err != nil {
		sh = "/bin/sh"
	}
	copyWithLibs(t, r, sh, "/usr/bin/sh")
	for _, tool := range []string{"systemd-sysusers", "systemd-tmpfiles"} {
		p, err := exec.LookPath(tool)
		if err != nil {
			t.Fatal(err)
		}
		copyWithLibs(t, r, p, "/usr/bin/"+tool)
	}
	writeFile(t, filepath.Join(r, "usr/bin/systemctl"), systemctlStub, 0o755)
	for _, f := range []string{"var/lib/dpkg/status", "var/lib/dpkg/available"} {
		writeFile(t, filepath.Join(r, f), "", 0o644)
	}
	run(t, nil, "", "rpm", "--root", r, "--initdb")
	return r
}

// copyWithLibs copies a host binary into the root at dst, with every
// library ldd names at the same path.
func copyWithLibs(t *testing.T, root, bin, dst string) {
	t.Helper()
	copyFile(t, bin, filepath.Join(root, dst), 0o755)
	out := run(t, nil, "", "ldd", bin)
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		for _, f := range strings.Fields(sc.Text()) {
			if strings.HasPrefix(f, "/") {
				copyFile(t, f, filepath.Join(root, f), 0o755)
			}
		}
	}
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dst, string(b), mode)
}

// stubCalls returns the systemctl calls recorded in the root so far.
func stubCalls(t *testing.T, root string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "var/log/systemctl-stub.log"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

// tree describes every file under root (type, mode, size, mtime, content
// hash, link target), except the mounted /proc, /dev and the files named
// in skip (a path relative to root, or a base name): two equal trees are
// an unchanged root.
func tree(t *testing.T, root string, skip ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "proc" || rel == "dev" {
			return filepath.SkipDir
		}
		for _, s := range skip {
			if rel == s || filepath.Base(rel) == s {
				return nil
			}
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		desc := fmt.Sprintf("%v %d %d", fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			desc += " -> " + target
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			desc += " " + hex.EncodeToString(sum[:8])
		}
		out[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// diffTrees lists what differs between two trees.
func diffTrees(a, b map[string]string) []string {
	var d []string
	for p, da := range a {
		if db, ok := b[p]; !ok {
			d = append(d, "removed "+p)
		} else if da != db {
			d = append(d, "changed "+p+": "+da+" -> "+db)
		}
	}
	for p := range b {
		if _, ok := a[p]; !ok {
			d = append(d, "added "+p)
		}
	}
	sort.Strings(d)
	return d
}
