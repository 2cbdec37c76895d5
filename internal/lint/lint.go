// Package lint checks a revision (a bundle file or a directory) offline,
// on a workstation, the way the agent would at Unpack and Validate, and
// reports apart what AWS CodeDeploy's own agent would refuse or do
// differently with it (docs/codedeploy/compatibility.md): whoever moves
// revisions between the two sees it before a deployment does.
package lint

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/rollback-agent/rollback-agent/internal/appspec"
	"github.com/rollback-agent/rollback-agent/internal/bundle"
	"github.com/rollback-agent/rollback-agent/internal/install"
	"github.com/rollback-agent/rollback-agent/internal/yamlx"
)

// Report is what Lint found, by kind.
type Report struct {
	Path string `json:"path"`
	// Format is the bundle's format, or "dir".
	Format string `json:"format"`
	Files  int    `json:"files"`
	// Errors make this agent refuse the revision (before any hook runs).
	Errors []string `json:"errors"`
	// Warnings are deployed with a warning by this agent.
	Warnings []string `json:"warnings"`
	// CodeDeploy lists what CodeDeploy's agent would refuse, or do
	// differently, with this revision.
	CodeDeploy []string `json:"codedeploy"`
	// HostUsers and HostGroups must exist on the hosts (runas, owner,
	// group): they are checked there at Validate, not on this machine.
	HostUsers  []string `json:"host_users,omitempty"`
	HostGroups []string `json:"host_groups,omitempty"`
}

// OK reports whether the agent would accept the revision.
func (r *Report) OK() bool { return len(r.Errors) == 0 }

// Lint checks the bundle file or directory at path. An error is returned
// only when the path cannot be read at all; problems with the revision are
// in the report.
func Lint(ctx context.Context, path string) (*Report, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("lint: %w", err)
	}
	rep := &Report{Path: path, Errors: []string{}, Warnings: []string{}, CodeDeploy: []string{}}
	work, err := os.MkdirTemp("", "agentctl-lint-")
	if err != nil {
		return nil, fmt.Errorf("lint: %w", err)
	}
	defer os.RemoveAll(work)
	bundlePath := path
	rep.Format = "dir"
	if fi.IsDir() {
		// A directory deploys as the tar.gz the agent makes of it.
		bundlePath = filepath.Join(work, "bundle.tgz")
		f, err := os.Create(bundlePath)
		if err != nil {
			return nil, fmt.Errorf("lint: %w", err)
		}
		err = bundle.WriteTarGz(ctx, path, f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			rep.Errors = append(rep.Errors, err.Error())
			return rep, nil
		}
	}
	rev := filepath.Join(work, "revision")
	res, err := bundle.UnpackFile(ctx, bundlePath, rev, bundle.Limits{})
	if err != nil {
		rep.Errors = append(rep.Errors, "Unpack: "+err.Error())
		return rep, nil
	}
	if !fi.IsDir() {
		rep.Format = string(res.Format)
	}
	rep.Files = res.Files
	lintRevision(rep, rev, res)
	return rep, nil
}

func lintRevision(rep *Report, rev string, res *bundle.Result) {
	users, groups := map[string]bool{}, map[string]bool{}
	opts := appspec.Options{
		// Accounts are the hosts', not this machine's: noted, checked there.
		LookupUser:  func(n string) error { users[n] = true; return nil },
		LookupGroup: func(n string) error { groups[n] = true; return nil },
	}
	spec, err := appspec.Load(rev, opts)
	if err != nil {
		var ye *yamlx.Error
		if errors.As(err, &ye) {
			for _, p := range ye.Problems {
				line := formatProblem(ye.File, p)
				if p.Warning {
					rep.Warnings = append(rep.Warnings, line)
				} else {
					rep.Errors = append(rep.Errors, line)
				}
			}
		} else {
			rep.Errors = append(rep.Errors, err.Error())
		}
		return
	}
	rep.Warnings = append(rep.Warnings, spec.Warnings...)
	rep.CodeDeploy = append(rep.CodeDeploy, spec.Differences...)
	digests := map[string]bundle.Entry{}
	for _, e := range res.Entries {
		digests[e.Path] = e
	}
	warnings, err := install.Check(spec, rev, digests)
	if err != nil {
		rep.Errors = append(rep.Errors, err.Error())
	}
	for _, w := range warnings {
		if isDifference(w) {
			rep.CodeDeploy = append(rep.CodeDeploy, w)
		} else {
			rep.Warnings = append(rep.Warnings, w)
		}
	}
	rep.CodeDeploy = append(rep.CodeDeploy, backgroundOutputs(spec, rev)...)
	rep.HostUsers, rep.HostGroups = sorted(users), sorted(groups)
}

// isDifference tells the install warnings that are about CodeDeploy's
// agent doing otherwise.
func isDifference(w string) bool {
	return strings.Contains(w, "CodeDeploy's agent")
}

func formatProblem(file string, p yamlx.Problem) string {
	prefix := file
	if s := p.Pos.String(); s != "" {
		prefix += ":" + s
	}
	if p.Warning {
		return prefix + ": warning: " + p.Msg
	}
	return prefix + ": " + p.Msg
}

func sorted(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return slices.Compact(out)
}
