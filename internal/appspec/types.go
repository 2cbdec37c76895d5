// Package appspec parses and validates appspec.yml with the semantics of
// AWS CodeDeploy's EC2/on-premises agent (see ../shared/reference/
// codedeploy-appspec.md): a bundle that deploys with CodeDeploy deploys
// unchanged here. It validates once, right after unpacking, and reports
// every problem at once with its line.
package appspec

import "time"

// Lifecycle events, in the order an in-place deployment runs them.
const (
	BeforeBlockTraffic = "BeforeBlockTraffic"
	AfterBlockTraffic  = "AfterBlockTraffic"
	ApplicationStop    = "ApplicationStop"
	BeforeInstall      = "BeforeInstall"
	AfterInstall       = "AfterInstall"
	ApplicationStart   = "ApplicationStart"
	ValidateService    = "ValidateService"
	BeforeAllowTraffic = "BeforeAllowTraffic"
	AfterAllowTraffic  = "AfterAllowTraffic"
)

// Events returns every scriptable event in run order.
func Events() []string {
	return []string{
		BeforeBlockTraffic, AfterBlockTraffic, ApplicationStop,
		BeforeInstall, AfterInstall, ApplicationStart, ValidateService,
		BeforeAllowTraffic, AfterAllowTraffic,
	}
}

// file_exists_behavior values.
const (
	Disallow  = "DISALLOW"
	Overwrite = "OVERWRITE"
	Retain    = "RETAIN"
)

// DefaultTimeout is a hook script's timeout when the appspec gives none,
// and also the most the scripts of one event may take together.
const DefaultTimeout = 3600 * time.Second

// AppSpec is a parsed, validated appspec.
type AppSpec struct {
	// File is the name the spec was read from: appspec.yml or appspec.yaml.
	File string `json:"file"`
	// Version is the literal "0.0" (only value CodeDeploy accepts).
	Version string `json:"version"`
	OS      string `json:"os"`
	Files   []File `json:"files"`
	// FileExistsBehavior is DISALLOW (default), OVERWRITE or RETAIN.
	FileExistsBehavior string       `json:"file_exists_behavior"`
	Permissions        []Permission `json:"permissions"`
	// Hooks maps an event name to its scripts, in file order. Events
	// without scripts are absent.
	Hooks map[string][]Script `json:"hooks"`
	// Warnings are non-fatal findings (unknown keys, which CodeDeploy
	// ignores), "file:line:col: warning: ..." each, for the deployment log.
	Warnings []string `json:"warnings,omitempty"`
	// Differences are points where CodeDeploy's agent would refuse this
	// appspec or do something else with it than this agent does,
	// "file:line:col: codedeploy: ..." each. They do not fail a
	// deployment; they warn whoever moves revisions between the two.
	Differences []string `json:"differences,omitempty"`
}

// File is one entry of `files`.
type File struct {
	// Source is relative to the revision root; "/" (or "") is the whole revision.
	Source string `json:"source"`
	// Destination is an absolute directory.
	Destination string `json:"destination"`
	Line        int    `json:"line"`
}

// Permission is one entry of `permissions`.
type Permission struct {
	Object  string   `json:"object"`
	Pattern string   `json:"pattern"` // default "**"
	Except  []string `json:"except,omitempty"`
	Owner   string   `json:"owner,omitempty"`
	Group   string   `json:"group,omitempty"`
	// Mode is the literal octal digits as written ("644", "0644", "4755"),
	// parsed; HasMode says whether mode was given at all.
	Mode    uint32   `json:"mode,omitempty"`
	HasMode bool     `json:"has_mode,omitempty"`
	ACLs    []string `json:"acls,omitempty"`
	Context *Context `json:"context,omitempty"`
	// Types is a subset of {file, directory}; default both.
	Types []string `json:"types"`
	Line  int      `json:"line"`
}

// Context is an SELinux context (`name` is the SELinux user, as both
// CodeDeploy agents read it, not `user` as the docs say).
type Context struct {
	Name  string `json:"name,omitempty"`
	Type  string `json:"type"`
	Range string `json:"range,omitempty"`
}

// Script is one hook script.
type Script struct {
	// Location is relative to the revision root.
	Location string        `json:"location"`
	Timeout  time.Duration `json:"timeout"`
	RunAs    string        `json:"runas,omitempty"`
	Sudo     bool          `json:"sudo,omitempty"`
	Line     int           `json:"line"`
}

// HasType reports whether a permission applies to kind ("file" or "directory").
func (p Permission) HasType(kind string) bool {
	for _, t := range p.Types {
		if t == kind {
			return true
		}
	}
	return false
}
