package bundle

import (
	"errors"
	"fmt"
	"path"
	"strings"
	"unicode/utf8"
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
	case !utf8.ValidString(name):
		return "", errNotUTF8("name")
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

// errNotUTF8 refuses names that are not UTF-8. Every record of a revision
// (files.json, the install manifest, the API) is JSON, which would store
// such a name as U+FFFD and so name a different file than the one on disk;
// CodeDeploy's agent fails on them too, writing its install instructions as
// JSON (installer.rb). The refusal says how to fix it rather than
// deploying half of what the bundle holds.
func errNotUTF8(what string) error {
	return fmt.Errorf("the %s is not valid UTF-8 (an ISO-8859 or other legacy encoding?); rename it in UTF-8 (e.g. convmv -f latin1 -t utf8) and bundle again", what)
}

// checkLinkTarget is the early, purely lexical check of a symlink found at
// rel: it catches the obvious escapes when the entry is read, so the error
// comes before anything else is unpacked. Chains of links can still escape in
// ways only the complete tree shows; resolveLink checks those at the end.
//
// An absolute target is data, not an escape: a packaged virtualenv's
// bin/python3 -> /usr/bin/python3 is installed as it is, as CodeDeploy
// does. Unpacking never follows any link (parentOf refuses to write through
// one) and the agent never reads through one inside a revision, so such a
// link cannot make anything land or be read outside the revision. A relative
// target that climbs out of the revision stays refused: it would name one
// file in the unpacked copy and another once installed.
func checkLinkTarget(rel, target string) error {
	switch {
	case target == "":
		return errors.New("symlink has an empty target")
	case len(target) > maxLinkTarget:
		return fmt.Errorf("symlink target is longer than %d bytes", maxLinkTarget)
	case strings.IndexByte(target, 0) >= 0:
		return errors.New("symlink target contains a NUL byte")
	case !utf8.ValidString(target):
		return errNotUTF8("symlink target")
	case strings.HasPrefix(target, "/"):
		return nil
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
// target "d/up/.." looks like "d" but really is the root's parent. A walk
// that reaches an absolute link (or starts at one) ends there: from then on
// it names a host path, which is data (see checkLinkTarget).
//
// Components that do not exist (or sit below a regular file) are followed
// lexically; the kernel would fail there, so treating them as plain names
// can only make the check stricter. Each step costs one map lookup of one
// component, so the check is linear in the target's length.
func resolveLink(l, floor *node) error {
	if strings.HasPrefix(l.target, "/") {
		return nil
	}
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
				return nil
			}
			todo = next.target + "/" + todo
		}
	}
	return nil
}
