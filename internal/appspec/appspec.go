package appspec

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strings"

	"github.com/goccy/go-yaml/ast"

	"github.com/rollback-agent/rollback-agent/internal/yamlx"
)

// Options tunes validation. Zero value: no revision checks, users/groups looked up with os/user.
type Options struct {
	// RevisionDir is the unpacked revision root. When set, files[].source and
	// hooks' locations must exist inside it (reported early, with their line,
	// instead of failing at run time as CodeDeploy does).
	RevisionDir string
	// LookupUser / LookupGroup return an error when the name does not exist.
	// nil means os/user.Lookup / user.LookupGroup.
	LookupUser  func(name string) error
	LookupGroup func(name string) error
}

// The names CodeDeploy accepts for the appspec, in the order Find tries them.
const (
	nameYML  = "appspec.yml"
	nameYAML = "appspec.yaml"
)

// Find returns the appspec file name in dir: "appspec.yml" first, then "appspec.yaml"; an error naming both when neither exists.
func Find(dir string) (string, error) {
	for _, name := range []string{nameYML, nameYAML} {
		fi, err := os.Lstat(filepath.Join(dir, name))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue
		case err != nil:
			return "", fmt.Errorf("appspec: looking for %s in %s: %w", name, dir, err)
		case fi.Mode()&fs.ModeSymlink != 0:
			// Revisions may hold links to host paths (absolute links are
			// data): the appspec is read only when it is the revision's
			// own file, or a link to one inside it.
			if err := insideRevision(dir, name); err != nil {
				return "", err
			}
		case !fi.Mode().IsRegular():
			// A directory called appspec.yml is a broken bundle, not a
			// reason to fall back to appspec.yaml silently.
			return "", fmt.Errorf("appspec: %s in %s is not a regular file", name, dir)
		}
		return name, nil
	}
	return "", fmt.Errorf("appspec: neither %s nor %s found at the root of the revision %s", nameYML, nameYAML, dir)
}

// insideRevision checks that the link name in dir leads to a regular file
// inside dir.
func insideRevision(dir, name string) error {
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return fmt.Errorf("appspec: resolving the revision %s: %w", dir, err)
	}
	real, err := filepath.EvalSymlinks(filepath.Join(root, name))
	if err != nil {
		return fmt.Errorf("appspec: %s is a symlink to nothing: %w", name, err)
	}
	if !within(root, real) {
		return fmt.Errorf("appspec: %s is a symlink to %s, outside the revision; the appspec must be a file of the revision", name, real)
	}
	fi, err := os.Stat(real)
	if err != nil || !fi.Mode().IsRegular() {
		return fmt.Errorf("appspec: %s does not lead to a regular file", name)
	}
	return nil
}

// Load finds, reads, parses and validates the appspec of the revision in dir (sets opts.RevisionDir = dir).
func Load(dir string, opts Options) (*AppSpec, error) {
	name, err := Find(dir)
	if err != nil {
		return nil, err
	}
	// Bounded: a bundle may carry an appspec of any size up to
	// limits.max_file_bytes, and only the first MiB can be valid.
	data, err := yamlx.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return nil, fmt.Errorf("appspec: reading %s: %w", name, err)
	}
	opts.RevisionDir = dir
	spec, err := Parse(name, data, opts)
	if err == nil && name == nameYAML {
		spec.Differences = append(spec.Differences, name+": codedeploy: the revision has appspec.yaml and no appspec.yml: "+
			"CodeDeploy's agent (v1) reads appspec.yml for its hooks unless the deployment names the file, and then fails "+
			"(\"did not find an AppSpec file\"); name it appspec.yml to deploy it with both agents")
	}
	return spec, err
}

// Parse parses and validates data; file names the file in messages (use the base name as given).
func Parse(file string, data []byte, opts Options) (*AppSpec, error) {
	doc, err := parseYAML(file, data)
	if err != nil {
		return nil, err
	}
	probs := &yamlx.Problems{File: file}
	if yamlx.IsNull(doc) {
		probs.ErrorAt(yamlx.Pos{Line: 1, Col: 1}, "empty appspec: it needs at least version: 0.0 and os: linux")
		return nil, probs.Err()
	}
	ps := newParser(probs, opts)
	spec := ps.document(doc)
	if err := probs.Err(); err != nil {
		return nil, err
	}
	spec.File = file
	spec.Warnings = probs.Warnings()
	spec.Differences = ps.differences(file)
	return spec, nil
}

// parseYAML wraps yamlx.Parse so that a panic inside the third-party YAML
// parser on hostile input (appspecs come from whoever can push a revision)
// becomes a reported problem instead of killing the agent.
func parseYAML(file string, data []byte) (doc ast.Node, err error) {
	defer func() {
		if r := recover(); r != nil {
			doc = nil
			err = &yamlx.Error{File: file, Problems: []yamlx.Problem{{Msg: fmt.Sprintf("YAML syntax: the parser gave up on this file (%v)", r)}}}
		}
	}()
	return yamlx.Parse(file, data)
}

// parser holds the state of one Parse call: the problems found so far and
// memoised user/group lookups, because the same owner usually appears in
// several permissions and hooks and each lookup may read /etc/passwd or NSS.
type parser struct {
	probs       *yamlx.Problems
	revision    string
	realRoot    string // revision with symlinks resolved, computed on first use
	rootChecked bool
	lookupUser  func(string) error
	lookupGroup func(string) error
	users       map[string]error
	groups      map[string]error
	diffs       []finding
}

func newParser(probs *yamlx.Problems, opts Options) *parser {
	ps := &parser{
		probs:       probs,
		revision:    opts.RevisionDir,
		lookupUser:  opts.LookupUser,
		lookupGroup: opts.LookupGroup,
		users:       map[string]error{},
		groups:      map[string]error{},
	}
	if ps.lookupUser == nil {
		ps.lookupUser = func(name string) error { _, err := user.Lookup(name); return err }
	}
	if ps.lookupGroup == nil {
		ps.lookupGroup = func(name string) error { _, err := user.LookupGroup(name); return err }
	}
	return ps
}

func (ps *parser) document(doc ast.Node) *AppSpec {
	spec := &AppSpec{FileExistsBehavior: Disallow, Hooks: map[string][]Script{}}
	topKeys := []string{"version", "os", "files", "file_exists_behavior", "permissions", "hooks"}
	entries, ok := yamlx.Mapping(doc, ps.probs)
	if !ok {
		ps.probs.Errorf(doc, "the appspec must be a mapping of keys (version, os, files, hooks, ...), got %s", article(doc))
		return spec
	}
	seen := map[string]bool{}
	for _, e := range entries {
		seen[e.Key] = true
		switch e.Key {
		case "version":
			spec.Version = ps.version(e)
		case "os":
			spec.OS = ps.os(e)
		case "files":
			spec.Files = ps.files(e)
		case "file_exists_behavior":
			spec.FileExistsBehavior = ps.fileExistsBehavior(e)
		case "permissions":
			spec.Permissions = ps.permissions(e)
		case "hooks":
			spec.Hooks = ps.hooks(e)
		default:
			ps.unknownKey(e, "", topKeys)
		}
	}
	if !seen["version"] {
		ps.probs.Errorf(doc, "version: missing; CodeDeploy requires version: 0.0")
	}
	if !seen["os"] {
		ps.probs.Errorf(doc, "os: missing; this agent requires os: linux")
	}
	return spec
}

// version accepts only the number 0.0, as both CodeDeploy agents compare it
// numerically: the integer 0 is that number too (Ruby's 0 == 0.0, and v2
// reads an f64). A quoted "0.0" is a string that v1 rejects; it is accepted
// here because its intent is clear, but reported as a difference so that
// the bundle is fixed before it meets a real CodeDeploy agent.
func (ps *parser) version(e yamlx.Entry) string {
	switch v := e.Value.(type) {
	case *ast.FloatNode:
		if v.Value == 0 {
			return "0.0"
		}
	case *ast.IntegerNode:
		if isZero(v.Value) {
			return "0.0"
		}
	case *ast.StringNode:
		if strings.TrimSpace(v.Value) == "0.0" {
			ps.differ(e.Value, "version: %q is quoted; CodeDeploy's v1 agent fails on a string version (\"invalid version value\"); write version: 0.0 without quotes", v.Value)
			return "0.0"
		}
	}
	if yamlx.IsNull(e.Value) {
		ps.probs.ErrorAt(e.ValuePos, "version: missing value; CodeDeploy requires version: 0.0")
		return ""
	}
	ps.probs.ErrorAt(e.ValuePos, "version: %s is not a supported version; CodeDeploy accepts only version: 0.0", describe(e.Value))
	return ""
}

func (ps *parser) os(e yamlx.Entry) string {
	s, ok := ps.nonEmpty(e, "os")
	switch {
	case !ok:
		return ""
	case s == "linux":
		return s
	case s == "windows":
		ps.probs.ErrorAt(e.ValuePos, "os: windows revisions need the CodeDeploy Windows agent; this agent deploys Linux revisions (os: linux)")
	default:
		ps.probs.ErrorAt(e.ValuePos, "os: unsupported operating system %q; CodeDeploy accepts linux or windows, and this agent deploys linux", s)
	}
	return ""
}

// fileExistsBehavior upper-cases the value as the CodeDeploy agent does with
// the API override, so "overwrite" works the same in both places. In the
// appspec itself CodeDeploy's agent compares it as written (installer.rb)
// and fails on anything but upper case: that is reported as a difference.
func (ps *parser) fileExistsBehavior(e yamlx.Entry) string {
	if yamlx.IsNull(e.Value) {
		return Disallow
	}
	s, ok := ps.str(e, "file_exists_behavior")
	if !ok {
		return Disallow
	}
	switch up := strings.ToUpper(strings.TrimSpace(s)); up {
	case Disallow, Overwrite, Retain:
		if up != s {
			ps.differ(e.Value, "file_exists_behavior: %q is read as %s here, but CodeDeploy's agent fails the deployment on it (\"an invalid option was specified for fileExistsBehavior\"); write %s", s, up, up)
		}
		return up
	}
	ps.probs.ErrorAt(e.ValuePos, "file_exists_behavior: %q is not one of DISALLOW, OVERWRITE, RETAIN", s)
	return Disallow
}

// unknownKey warns about a key CodeDeploy would silently ignore: a typo such
// as "Hooks" or "runAs" otherwise loses its whole section without a word.
func (ps *parser) unknownKey(e yamlx.Entry, path string, known []string) {
	where := "at the top level"
	if path != "" {
		where = "in " + path
	}
	ps.probs.Warnf(e.KeyNode, "unknown key %q %s is ignored by CodeDeploy%s (known keys: %s)",
		e.Key, where, suggest(e.Key, known), strings.Join(known, ", "))
}

// suggest returns ` (did you mean "x"?)` when key differs from a known name
// only by case or by '-' versus '_', the usual slips.
func suggest(key string, known []string) string {
	norm := func(s string) string { return strings.ReplaceAll(strings.ToLower(s), "-", "_") }
	for _, k := range known {
		if norm(k) == norm(key) {
			return fmt.Sprintf(" (did you mean %q?)", k)
		}
	}
	return ""
}

// mapping returns the entries of n, reporting anything else as an error.
func (ps *parser) mapping(n ast.Node, path string) ([]yamlx.Entry, bool) {
	entries, ok := yamlx.Mapping(n, ps.probs)
	if !ok {
		ps.probs.Errorf(n, "%s: want a mapping of keys, got %s", path, article(n))
	}
	return entries, ok
}

// list returns the items of a list value; a null value is an absent list.
func (ps *parser) list(e yamlx.Entry, path string) ([]ast.Node, bool) {
	if yamlx.IsNull(e.Value) {
		return nil, true
	}
	items, ok := yamlx.Sequence(e.Value)
	if !ok {
		ps.probs.ErrorAt(e.ValuePos, "%s: want a list, got %s", path, article(e.Value))
	}
	return items, ok
}

// str returns the text of a scalar value exactly as written.
func (ps *parser) str(e yamlx.Entry, path string) (string, bool) {
	return ps.scalar(e.Value, e.ValuePos, path)
}

func (ps *parser) scalar(n ast.Node, pos yamlx.Pos, path string) (string, bool) {
	s, ok := yamlx.Scalar(n)
	if !ok {
		ps.probs.ErrorAt(pos, "%s: want a string, got %s", path, article(n))
	}
	return s, ok
}

// nonEmpty is str for required values: null and "" are reported as missing.
func (ps *parser) nonEmpty(e yamlx.Entry, path string) (string, bool) {
	if yamlx.IsNull(e.Value) {
		ps.probs.ErrorAt(e.ValuePos, "%s: missing value", path)
		return "", false
	}
	s, ok := ps.str(e, path)
	if ok && strings.TrimSpace(s) == "" {
		ps.probs.ErrorAt(e.ValuePos, "%s: must not be empty", path)
		return "", false
	}
	return s, ok
}

// userExists and groupExists memoise lookups for the whole file.
func (ps *parser) userExists(pos yamlx.Pos, path, name string) {
	err, done := ps.users[name]
	if !done {
		err = ps.lookupUser(name)
		ps.users[name] = err
	}
	if err != nil {
		ps.probs.ErrorAt(pos, "%s: user %q does not exist on this host (%v)", path, name, err)
	}
}

func (ps *parser) groupExists(pos yamlx.Pos, path, name string) {
	err, done := ps.groups[name]
	if !done {
		err = ps.lookupGroup(name)
		ps.groups[name] = err
	}
	if err != nil {
		ps.probs.ErrorAt(pos, "%s: group %q does not exist on this host (%v)", path, name, err)
	}
}

// isZero reports whether a YAML integer's value is 0 (goccy stores
// non-negative integers as uint64, negative ones as int64).
func isZero(v any) bool {
	switch i := v.(type) {
	case int64:
		return i == 0
	case uint64:
		return i == 0
	}
	return false
}

// article names a node's kind for messages: "a list", "an integer".
func article(n ast.Node) string {
	k := yamlx.KindOf(n)
	switch k {
	case "null":
		return "nothing"
	case "alias", "integer":
		return "an " + k
	}
	return "a " + k
}

// describe shows a scalar as written, or the kind of anything else.
func describe(n ast.Node) string {
	if s, ok := yamlx.Scalar(n); ok {
		return fmt.Sprintf("%q", s)
	}
	return article(n)
}
