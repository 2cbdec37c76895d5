package appspec

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/rollback-agent/rollback-agent/internal/yamlx"
)

// wholeRevision is the Source of a files entry that copies the whole revision.
const wholeRevision = "/"

func (ps *parser) files(e yamlx.Entry) []File {
	items, ok := ps.list(e, "files")
	if !ok {
		return nil
	}
	known := []string{"source", "destination"}
	var out []File
	for i, it := range items {
		path := fmt.Sprintf("files[%d]", i)
		entries, ok := ps.mapping(it, path)
		if !ok {
			continue
		}
		itemPos := yamlx.PosOf(it)
		f := File{Line: itemPos.Line}
		var hasSource, hasDest bool
		for _, fe := range entries {
			switch fe.Key {
			case "source":
				hasSource = true
				f.Source = ps.source(fe, path+".source")
			case "destination":
				hasDest = true
				f.Destination = ps.absolute(fe, path+".destination", false)
			default:
				// CodeDeploy reads only source and destination; an `owner:`
				// here (issue #111) silently does nothing.
				ps.unknownKey(fe, path, known)
			}
		}
		if !hasSource {
			ps.probs.ErrorAt(itemPos, "%s.source: missing; give a path in the revision (/ for all of it)", path)
		}
		if !hasDest {
			ps.probs.ErrorAt(itemPos, "%s.destination: missing; give the absolute directory to copy into", path)
		}
		out = append(out, f)
	}
	return out
}

// source returns the revision-relative path of a files entry, or "/" for
// the whole revision. CodeDeploy joins the source to the archive directory,
// so a leading "/" is not an absolute path but the archive root.
func (ps *parser) source(e yamlx.Entry, path string) string {
	raw, ok := ps.nonEmpty(e, path)
	if !ok {
		return ""
	}
	rel := strings.TrimLeft(raw, "/")
	if rel == "" || filepath.Clean(rel) == "." {
		return wholeRevision
	}
	rel = filepath.Clean(rel)
	if escapes(rel) {
		ps.probs.ErrorAt(e.ValuePos, "%s: %q leaves the revision through ..; sources are relative to the revision root", path, raw)
		return rel
	}
	if ps.revision != "" {
		ps.checkSource(e.ValuePos, path, raw, rel)
	}
	return rel
}

// absolute returns a cleaned absolute path (destinations, permission
// objects); trim strips surrounding spaces first where CodeDeploy does.
// A relative path is refused: CodeDeploy's agent passes it to
// File.expand_path (install_instruction.rb), which resolves it against
// the agent's own working directory, an accident of how it was started
// that no revision should depend on. The message says what to write.
func (ps *parser) absolute(e yamlx.Entry, path string, trim bool) string {
	raw, ok := ps.nonEmpty(e, path)
	if !ok {
		return ""
	}
	if trim {
		raw = strings.TrimSpace(raw)
	}
	if !filepath.IsAbs(raw) {
		ps.probs.ErrorAt(e.ValuePos, "%s: %q must be an absolute path (starting with /), e.g. %q; CodeDeploy's agent would resolve it against its own working directory",
			path, raw, "/"+strings.TrimPrefix(filepath.Clean(raw), "./"))
		return raw
	}
	return filepath.Clean(raw)
}

// escapes reports whether a cleaned relative path climbs out of its root.
func escapes(rel string) bool {
	return rel == ".." || strings.HasPrefix(rel, "../")
}

// within reports whether p is root or below it; both must be clean and
// free of symlinks for the answer to mean anything.
func within(root, p string) bool {
	rel, err := filepath.Rel(root, p)
	return err == nil && !escapes(rel)
}

// root returns the revision directory with its symlinks resolved, so that
// resolved paths inside it can be compared; it reports a revision that
// cannot be resolved once, and then returns "".
func (ps *parser) root() string {
	if !ps.rootChecked {
		ps.rootChecked = true
		real, err := filepath.EvalSymlinks(ps.revision)
		if err != nil {
			ps.probs.ErrorAt(yamlx.Pos{}, "checking the revision directory: %v", err)
		} else {
			ps.realRoot = real
		}
	}
	return ps.realRoot
}

// checkSource reports a source missing from the revision. The source itself
// may be a symlink (it is copied as one), so it is Lstat'ed, but the
// directories leading to it must stay inside the revision: otherwise the
// Install step would copy files from elsewhere on the host.
func (ps *parser) checkSource(pos yamlx.Pos, path, raw, rel string) {
	root := ps.root()
	if root == "" {
		return
	}
	full := filepath.Join(root, rel)
	if _, err := os.Lstat(full); err != nil {
		ps.probs.ErrorAt(pos, "%s: %q does not exist in the revision", path, raw)
		return
	}
	parent, err := filepath.EvalSymlinks(filepath.Dir(full))
	if err != nil || !within(root, parent) {
		ps.probs.ErrorAt(pos, "%s: %q is reached through a symlink that leaves the revision", path, raw)
	}
}

// checkScript reports a hook script that CodeDeploy would fail to run
// ("Script does not exist at specified location"), and one that a symlink
// leads outside the revision, which would run a file the bundle does not own.
func (ps *parser) checkScript(pos yamlx.Pos, path, raw, rel string) {
	root := ps.root()
	if root == "" {
		return
	}
	full := filepath.Join(root, rel)
	if _, err := os.Lstat(full); err != nil {
		ps.probs.ErrorAt(pos, "%s: script %q does not exist in the revision", path, raw)
		return
	}
	real, err := filepath.EvalSymlinks(full)
	if err != nil {
		ps.probs.ErrorAt(pos, "%s: script %q is a symlink to nothing (%v)", path, raw, err)
		return
	}
	if !within(root, real) {
		ps.probs.ErrorAt(pos, "%s: script %q resolves to %s, outside the revision", path, raw, real)
		return
	}
	fi, err := os.Stat(real)
	if err != nil {
		ps.probs.ErrorAt(pos, "%s: script %q: %v", path, raw, err)
		return
	}
	if !fi.Mode().IsRegular() {
		what := "not a regular file"
		if fi.IsDir() {
			what = "a directory"
		}
		ps.probs.ErrorAt(pos, "%s: script %q is %s", path, raw, what)
	}
}
