package install

import (
	"context"
	"fmt"
	"io/fs"
	"os/exec"
	"strings"
)

// applyExtras sets ACLs (setfacl) and SELinux contexts (semanage,
// restorecon) the way CodeDeploy does: the base u::/g::/o:: entries come
// from the file's mode, setfacl recomputes the mask.
func applyExtras(ctx context.Context, it *item) error {
	if len(it.acls) > 0 {
		if err := setACL(ctx, it); err != nil {
			return err
		}
	}
	if it.context != nil {
		if err := setContext(ctx, it); err != nil {
			return err
		}
	}
	return nil
}

func setACL(ctx context.Context, it *item) error {
	bin, err := exec.LookPath("setfacl")
	if err != nil {
		return fmt.Errorf("install: %s: permissions with acls need setfacl, which is not installed (install the acl package)", it.Path)
	}
	perm := it.Mode.Perm()
	rwx := func(bits fs.FileMode) string {
		s := []byte("---")
		if bits&4 != 0 {
			s[0] = 'r'
		}
		if bits&2 != 0 {
			s[1] = 'w'
		}
		if bits&1 != 0 {
			s[2] = 'x'
		}
		return string(s)
	}
	base := []string{"u::" + rwx(perm>>6), "g::" + rwx(perm>>3), "o::" + rwx(perm)}
	entries := append([]string{}, base...)
	hasDefault := false
	for _, a := range it.acls {
		if strings.HasPrefix(a, "d:") || strings.HasPrefix(a, "default:") {
			if it.Kind != KindDir {
				return fmt.Errorf("install: %s: default ACL %q applies to directories only", it.Path, a)
			}
			hasDefault = true
		}
		entries = append(entries, a)
	}
	if hasDefault {
		for _, b := range base {
			entries = append(entries, "d:"+b)
		}
	}
	out, err := exec.CommandContext(ctx, bin, "--set", strings.Join(entries, ","), it.Path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("install: setfacl --set %s %s: %v: %s", strings.Join(entries, ","), it.Path, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func setContext(ctx context.Context, it *item) error {
	sem, err1 := exec.LookPath("semanage")
	rc, err2 := exec.LookPath("restorecon")
	if err1 != nil || err2 != nil {
		return fmt.Errorf("install: %s: permissions with a context need semanage and restorecon (policycoreutils), which are not installed", it.Path)
	}
	args := []string{"fcontext", "-a", "-t", it.context.Type}
	if it.context.Name != "" {
		args = append(args, "-s", it.context.Name)
	}
	if it.context.Range != "" {
		args = append(args, "-r", it.context.Range)
	}
	args = append(args, it.Path)
	if out, err := exec.CommandContext(ctx, sem, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("install: semanage %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	if out, err := exec.CommandContext(ctx, rc, "-vF", it.Path).CombinedOutput(); err != nil {
		return fmt.Errorf("install: restorecon %s: %v: %s", it.Path, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// removeContext undoes a context rule on cleanup; best effort, as the
// path is going away anyway.
func removeContext(ctx context.Context, path string) {
	if sem, err := exec.LookPath("semanage"); err == nil {
		_ = exec.CommandContext(ctx, sem, "fcontext", "-d", path).Run()
	}
}
