package install

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/rollback-agent/rollback-agent/internal/posixacl"
)

// setACL sets the permission's ACL on the open file f natively, the way
// CodeDeploy's agent does with setfacl --set (see posixacl.Build): base
// entries from the mode, and a mask of the mode's group bits when the
// entries name users or groups without one, so u:bob:rw on a 640 file is
// effectively r--, not the rw- that setfacl's own mask computation grants.
func setACL(f *os.File, it *item) error {
	var specs []posixacl.Spec
	for _, a := range it.acls {
		sp, err := posixacl.ParseSpec(a)
		if err != nil {
			return fmt.Errorf("install: %s: %w", it.Path, err)
		}
		specs = append(specs, sp)
	}
	access, def, err := posixacl.Build(it.Mode, specs, it.Kind == KindDir, posixacl.LookupID)
	if err != nil {
		return fmt.Errorf("install: %s: %w", it.Path, err)
	}
	fd := int(f.Fd())
	if err := posixacl.SetFd(fd, posixacl.XattrAccess, access); err != nil {
		return fmt.Errorf("install: set the ACL of %s: %w (does its file system support ACLs?)", it.Path, err)
	}
	if it.Kind == KindDir {
		if def == nil {
			err = posixacl.RemoveFd(fd, posixacl.XattrDefault)
		} else {
			err = posixacl.SetFd(fd, posixacl.XattrDefault, def)
		}
		if err != nil {
			return fmt.Errorf("install: set the default ACL of %s: %w", it.Path, err)
		}
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
