package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"
)

// agentctl is two executables. `agentctl` itself holds the commands that
// talk to the agent, and links nothing of the AWS SDK: the SDK's package
// initialisation (endpoint tables with their regexps, the schemas of
// sts, sso and the other credential services) is most of a Go process's
// start-up and would be paid by every `agentctl status` (bench B5). The
// workstation commands, which use the SDK with the caller's credentials,
// are in HelperName, the whole command tree (internal/cli/workstation):
// agentctl lists them as its own and hands them over with exec(2), as git
// does with git-remote-https, so users only ever type agentctl.

// HelperName is the executable of the workstation commands.
const HelperName = "agentctl-aws"

// HelperDir is where the packages install HelperName (beside the package
// manager hook).
const HelperDir = "/usr/lib/rollback-agent"

// workstationCommands are the commands of HelperName, as agentctl's help
// lists them (a test holds them equal to the real ones).
func workstationCommands() [][2]string {
	return [][2]string{
		{"restore-instance", "Replace a whole instance from an AMI (run from a workstation with AWS credentials)"},
		{"push", "Bundle a directory, upload it with a signed manifest, and optionally move a channel"},
		{"releases", "List an app's uploaded versions and what each release channel points at"},
		{"promote", "Point a release channel at an uploaded version (an older one: a fleet-wide rollback)"},
		{"fleet", "Show every host of an app (or of one channel): version, status, health, last change; exit 1 when any failed, rolled back or needs an operator"},
		{"keygen", "Make a minisign key pair for signing releases"},
	}
}

// isWorkstation reports whether name is a command of HelperName.
func isWorkstation(name string) bool {
	for _, c := range workstationCommands() {
		if c[0] == name {
			return true
		}
	}
	return false
}

// standIns are agentctl's entries for the workstation commands: each
// hands the whole command line, flags and all, to HelperName.
func standIns(g *globals) []*cobra.Command {
	var out []*cobra.Command
	for _, c := range workstationCommands() {
		name := c[0]
		cmd := &cobra.Command{
			Use:                name,
			Short:              c[1],
			DisableFlagParsing: true,
			RunE: func(*cobra.Command, []string) error {
				return execHelper(g.args)
			},
		}
		// `agentctl help push` shows the real command's help.
		cmd.SetHelpFunc(func(*cobra.Command, []string) {
			err := execHelper([]string{name, "--help"})
			fmt.Fprintln(g.stderr, "agentctl: "+err.Error())
		})
		out = append(out, cmd)
	}
	return out
}

// execHelper replaces this process with HelperName running args, so that
// the terminal, signals and the exit status are the helper's own. It
// returns only when that could not happen.
func execHelper(args []string) error {
	path, err := HelperPath()
	if err != nil {
		return err
	}
	err = syscall.Exec(path, append([]string{"agentctl"}, args...), os.Environ())
	return fmt.Errorf("run %s: %w", path, err)
}

// HelperPath finds HelperName: beside the running agentctl (a build
// directory, or a workstation that copied both), else in HelperDir.
func HelperPath() (string, error) {
	var tried []string
	if exe, err := os.Executable(); err == nil {
		if exe, err = filepath.EvalSymlinks(exe); err == nil {
			tried = append(tried, filepath.Join(filepath.Dir(exe), HelperName))
		}
	}
	tried = append(tried, filepath.Join(HelperDir, HelperName))
	for _, p := range tried {
		fi, err := os.Stat(p)
		if err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("%s: %w", p, err)
		}
	}
	return "", fmt.Errorf("this command is in %s, which is not installed (looked for %v): it comes with the rollback-agent package; from source, `make build` puts it beside agentctl", HelperName, tried)
}
