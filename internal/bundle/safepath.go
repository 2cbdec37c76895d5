package bundle

import (
	"errors"
	"fmt"
	"path"
	"strings"
)

// Link-related bounds.
const (
	// maxLinkTarget is PATH_MAX: no symlink the kernel accepts is longer, and
	// it bounds what a zip symlink's content may make us read into memory.
	maxLinkTarget = 4096
	// maxLinkHops is the kernel's own limit on symlinks followed in one
	// lookup (ELOOP), used when checking where a link chain ends.
	maxLinkHops = 40
)

// errEscape is the wording every "goes outside the tree" refusal shares, so
// that logs and tests can grep for one phrase. It is built per call because
// the package keeps no variables.
func errEscape(format string, args ...any) error {
	return fmt.Errorf("path escapes the revision: "+format, args...)
}

// cleanName checks one archive member name and returns it cleaned and
// relative ("." for the revision root itself). The checks run on the raw
// name, before cleaning: path.Clean would quietly turn "a/../b" into "b", and
// an archive that needs ".." at all is refused rather than second-guessed.
func cleanName(name string) (string, error) {
	switch {
	case name == "":
		return "", errors.New("empty name")
	case strings.IndexByte(name, 0) >= 0:
		return "", errors.New("name contains a NUL byte")
	case strings.HasPrefix(name, "/"), strings.HasPrefix(name, `\`):
		return "", errEscape("absolute path")
	case hasDotDot(name):
		return "", errEscape(`the name has a ".." component`)
	}
	return path.Clean(name), nil
}

// hasDotDot reports whether p has a ".." component. Backslashes count as
// separators too: archives made on Windows use them, and other tools (unzip
// among them) treat them as separators, so `..\x` is refused everywhere.
func hasDotDot(p string) bool {
	for _, c := range strings.FieldsFunc(p, func(r rune) bool { return r == '/' || r == '\\' }) {
		if c == ".." {
			return true
		}
	}
	return false
}

// checkLinkTarget is the early, purely lexical check of a symlink found at
// rel: it catches the obvious escapes when the entry is read, so the error
// comes before anything else is unpacked. Chains of links can still escape in
// ways only the complete tree shows; resolveLink checks those at the end.
func checkLinkTarget(rel, target string) error {
	switch {
	case target == "":
		return errors.New("symlink has an empty target")
	case len(target) > maxLinkTarget:
		return fmt.Errorf("symlink target is longer than %d bytes", maxLinkTarget)
	case strings.IndexByte(target, 0) >= 0:
		return errors.New("symlink target contains a NUL byte")
	case strings.HasPrefix(target, "/"):
		return errEscape("symlink target %q is absolute", target)
	}
	if escapes(path.Join(path.Dir(rel), target)) {
		return errEscape("symlink target %q resolves outside the revision root", target)
	}
	return nil
}

// escapes reports whether a cleaned relative path leaves its root.
func escapes(p string) bool {
	return p == ".." || strings.HasPrefix(p, "../")
}

// resolveLink follows the symlink l through the unpacked tree the way the
// kernel would, following every other unpacked link it meets, and fails if
// the walk ever climbs above floor (the revision root as it will be after
// stripping). Lexical cleaning alone is not enough: with "d/up" -> "..", the
// target "d/up/.." looks like "d" but really is the root's parent.
//
// Components that do not exist (or sit below a regular file) are followed
// lexically; the kernel would fail there, so treating them as plain names
// can only make the check stricter. Each step costs one map lookup of one
// component, so the check is linear in the target's length.
func resolveLink(l, floor *node) error {
	cur := l.parent
	missing := 0 // components walked below cur that do not exist as directories
	todo := l.target
	hops := 0
	for todo != "" {
		var c string
		c, todo, _ = strings.Cut(todo, "/")
		switch {
		case c == "" || c == ".":
			continue
		case c == "..":
			if missing > 0 {
				missing--
				continue
			}
			if cur == floor {
				return errEscape("symlink target %q resolves outside the revision root", l.target)
			}
			cur = cur.parent
			continue
		case missing > 0:
			missing++
			continue
		}
		next := cur.children[c]
		switch {
		case next == nil || next.kind == kindFile:
			missing = 1
		case next.kind == kindDir:
			cur = next
		default: // a symlink: continue with its target, relative to cur
			hops++
			if hops > maxLinkHops {
				return fmt.Errorf("symlink target %q: more than %d links in a chain (loop?)", l.target, maxLinkHops)
			}
			if strings.HasPrefix(next.target, "/") {
				return errEscape("symlink target %q goes through an absolute link", l.target)
			}
			todo = next.target + "/" + todo
		}
	}
	return nil
}
