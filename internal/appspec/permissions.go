package appspec

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/goccy/go-yaml/ast"

	"github.com/rollback-agent/rollback-agent/internal/yamlx"
)

// aclRe is setfacl's entry syntax as CodeDeploy accepts it:
// [d[efault]:]{u[ser]|g[roup]|o[ther]|m[ask]}:[name]:perms, where perms is
// up to three of r, w, x, - or one octal digit (setfacl accepts both, and
// so does CodeDeploy's AceInfo).
var aclRe = regexp.MustCompile(`^(?:(d|default):)?(u|user|g|group|o|other|m|mask):([^:]*):([rwx-]{1,3}|[0-7])$`)

// SELinux MLS range pieces: s<n>[-s<n>][:<categories>] and c<n>[.c<n>].
var (
	rangeRe    = regexp.MustCompile(`^s([0-9]+)(?:-s([0-9]+))?(?::(.+))?$`)
	categoryRe = regexp.MustCompile(`^c([0-9]+)(?:\.c([0-9]+))?$`)
)

// SELinux limits CodeDeploy v2 documents for context ranges.
const (
	maxSensitivity = 15
	maxCategory    = 1023
)

func (ps *parser) permissions(e yamlx.Entry) []Permission {
	items, ok := ps.list(e, "permissions")
	if !ok {
		return nil
	}
	var out []Permission
	for i, it := range items {
		path := fmt.Sprintf("permissions[%d]", i)
		if p, ok := ps.permission(it, path); ok {
			out = append(out, p)
		}
	}
	return out
}

func (ps *parser) permission(n ast.Node, path string) (Permission, bool) {
	entries, ok := ps.mapping(n, path)
	if !ok {
		return Permission{}, false
	}
	itemPos := yamlx.PosOf(n)
	p := Permission{Pattern: "**", Types: []string{"file", "directory"}, Line: itemPos.Line}
	known := []string{"object", "pattern", "except", "owner", "group", "mode", "acls", "context", "type"}
	hasObject := false
	for _, e := range entries {
		kpath := path + "." + e.Key
		switch e.Key {
		case "object":
			hasObject = true
			// CodeDeploy strips the object before using it.
			p.Object = ps.absolute(e, kpath, true)
		case "pattern":
			if !yamlx.IsNull(e.Value) {
				p.Pattern, _ = ps.str(e, kpath)
			}
		case "except":
			p.Except = ps.stringList(e, kpath)
		case "owner":
			if !yamlx.IsNull(e.Value) {
				if name, ok := ps.nonEmpty(e, kpath); ok {
					p.Owner = name
					ps.userExists(e.ValuePos, kpath, name)
				}
			}
		case "group":
			if !yamlx.IsNull(e.Value) {
				if name, ok := ps.nonEmpty(e, kpath); ok {
					p.Group = name
					ps.groupExists(e.ValuePos, kpath, name)
				}
			}
		case "mode":
			p.Mode, p.HasMode = ps.mode(e, kpath)
		case "acls":
			p.ACLs = ps.acls(e, kpath)
		case "context":
			p.Context = ps.context(e, kpath)
		case "type":
			if !yamlx.IsNull(e.Value) {
				p.Types = ps.types(e, kpath)
			}
		default:
			ps.unknownKey(e, path, known)
		}
	}
	if !hasObject {
		ps.probs.ErrorAt(itemPos, "%s.object: missing; give the absolute path the permission applies to", path)
	}
	if p.HasMode && p.Mode&0o6000 != 0 && (p.Owner != "" || p.Group != "") {
		// CodeDeploy's agent runs chmod, then chown (install_instruction.rb
		// set_permissions), and the kernel's chown clears setuid and
		// setgid: this agent applies them in the same order, with the same
		// result. Say so, since the file asked for them.
		ps.probs.Warnf(n, "%s: mode %04o with owner or group: the chown that follows the chmod clears the setuid/setgid bits, as with CodeDeploy's agent, so the files get mode %04o; set them from a hook after Install if they are needed",
			path, p.Mode, p.Mode&^0o6000)
	}
	return p, true
}

// stringList returns a list of scalars (except globs).
func (ps *parser) stringList(e yamlx.Entry, path string) []string {
	items, ok := ps.list(e, path)
	if !ok {
		return nil
	}
	var out []string
	for i, it := range items {
		if s, ok := ps.scalar(it, yamlx.PosOf(it), fmt.Sprintf("%s[%d]", path, i)); ok {
			out = append(out, s)
		}
	}
	return out
}

// mode reads the mode as the digits written in the file. An unquoted mode
// with a leading zero is refused: CodeDeploy's agent reads YAML 1.1, where
// 0644 is the octal integer 420, which it applies as mode 0420 (and 0755 is
// 493, which it refuses); reading the digits as written would silently
// give another mode than CodeDeploy does, so the author is asked to quote
// it (or drop the zero) instead.
func (ps *parser) mode(e yamlx.Entry, path string) (uint32, bool) {
	if yamlx.IsNull(e.Value) {
		return 0, false
	}
	s, ok := ps.str(e, path)
	if !ok {
		return 0, false
	}
	if _, isInt := e.Value.(*ast.IntegerNode); isInt && len(s) > 1 && s[0] == '0' {
		if v, err := strconv.ParseUint(s, 8, 32); err == nil {
			cd := fmt.Sprintf("applies it as mode %04s", strconv.FormatUint(v, 10))
			if strings.ContainsAny(strconv.FormatUint(v, 10), "89") || len(strconv.FormatUint(v, 10)) > 4 {
				cd = "refuses it (not an octal mode)"
			}
			ps.probs.ErrorAt(e.ValuePos, "%s: %s is unquoted: YAML 1.1, which CodeDeploy's agent reads, takes it for the octal number %d and CodeDeploy %s; write mode: \"%s\" (quoted) or mode: %s",
				path, s, v, cd, s, strings.TrimLeft(s, "0"))
			return 0, false
		}
	}
	m, err := parseMode(s)
	if err != nil {
		ps.probs.ErrorAt(e.ValuePos, "%s: %q %v", path, s, err)
		return 0, false
	}
	return m, true
}

// parseMode parses 1 to 4 octal digits; CodeDeploy pads them to 3 on the
// left, which does not change the value ("75" is 0075).
func parseMode(s string) (uint32, error) {
	if len(s) == 0 || len(s) > 4 {
		return 0, fmt.Errorf("is not a mode: use 1 to 4 octal digits such as 644 or 4755")
	}
	for _, c := range s {
		if c < '0' || c > '7' {
			return 0, fmt.Errorf("is not a mode: %q is not an octal digit (use digits 0-7 such as 644; symbolic modes like u+x are not supported)", c)
		}
	}
	m, err := strconv.ParseUint(s, 8, 32)
	if err != nil {
		return 0, fmt.Errorf("is not a mode: %v", err)
	}
	return uint32(m), nil
}

func (ps *parser) acls(e yamlx.Entry, path string) []string {
	items, ok := ps.list(e, path)
	if !ok {
		return nil
	}
	var out []string
	for i, it := range items {
		ipath := fmt.Sprintf("%s[%d]", path, i)
		pos := yamlx.PosOf(it)
		s, ok := ps.scalar(it, pos, ipath)
		if !ok {
			continue
		}
		if err := checkACL(s); err != nil {
			ps.probs.ErrorAt(pos, "%s: %q %v", ipath, s, err)
			continue
		}
		out = append(out, s)
	}
	return out
}

// checkACL validates one setfacl entry. The base user, group and other
// entries are synthesised from mode by the agent, as CodeDeploy does, so
// an entry that would set them is refused rather than silently clash.
func checkACL(s string) error {
	m := aclRe.FindStringSubmatch(s)
	if m == nil {
		return fmt.Errorf("is not an ACL entry: want [d[efault]:]u[ser]|g[roup]|o[ther]|m[ask]:[name]:perms, e.g. u:bob:rwx")
	}
	isDefault, kind, name := m[1] != "", m[2][:1], m[3]
	switch {
	case (kind == "o" || kind == "m") && name != "":
		return fmt.Errorf("names a user or group in an other/mask entry, which takes no name")
	case !isDefault && kind != "m" && name == "":
		return fmt.Errorf("sets a base entry: the owner, group and other entries come from mode; name a user or group (u:bob:rw)")
	}
	return nil
}

func (ps *parser) context(e yamlx.Entry, path string) *Context {
	if yamlx.IsNull(e.Value) {
		return nil
	}
	entries, ok := ps.mapping(e.Value, path)
	if !ok {
		return nil
	}
	c := &Context{}
	hasType := false
	for _, ce := range entries {
		kpath := path + "." + ce.Key
		switch ce.Key {
		case "name":
			if !yamlx.IsNull(ce.Value) {
				c.Name, _ = ps.nonEmpty(ce, kpath)
			}
		case "type":
			hasType = true
			c.Type, _ = ps.nonEmpty(ce, kpath)
		case "range":
			if !yamlx.IsNull(ce.Value) {
				if r, ok := ps.nonEmpty(ce, kpath); ok {
					if err := checkRange(r); err != nil {
						ps.probs.ErrorAt(ce.ValuePos, "%s: %q %v", kpath, r, err)
					}
					c.Range = r
				}
			}
		case "user":
			// The docs call the SELinux user `user`, but both CodeDeploy
			// agents read `name`: this key does nothing there either.
			ps.probs.Warnf(ce.KeyNode, "%s: CodeDeploy ignores the user key of a context; the SELinux user goes in name", kpath)
		case "role":
			ps.probs.ErrorAt(ce.KeyPos, "%s: SELinux roles cannot be set on files; remove role", kpath)
		default:
			ps.unknownKey(ce, path, []string{"name", "type", "range"})
		}
	}
	if !hasType {
		ps.probs.ErrorAt(yamlx.PosOf(e.Value), "%s.type: missing; an SELinux context needs a type (e.g. httpd_sys_content_t)", path)
	}
	return c
}

// checkRange validates an MLS range as CodeDeploy's RangeInfo does:
// s<low>[-s<high>][:c<a>[.c<b>],...] with low <= high and no category twice.
func checkRange(r string) error {
	m := rangeRe.FindStringSubmatch(r)
	if m == nil {
		return fmt.Errorf("is not an SELinux range: want s<0-15>[-s<0-15>][:c<n>[.c<n>],...], e.g. s0-s0:c0.c255")
	}
	low, lowOK := level(m[1], maxSensitivity)
	high, highOK := low, lowOK
	if m[2] != "" {
		high, highOK = level(m[2], maxSensitivity)
	}
	switch {
	case !lowOK || !highOK:
		return fmt.Errorf("has a sensitivity above s%d", maxSensitivity)
	case high < low:
		return fmt.Errorf("has its high sensitivity s%d below the low one s%d", high, low)
	case m[3] == "":
		return nil
	}
	seen := map[int]bool{}
	for _, part := range strings.Split(m[3], ",") {
		cm := categoryRe.FindStringSubmatch(part)
		if cm == nil {
			return fmt.Errorf("has %q, which is not a category (c<n> or c<n>.c<n>)", part)
		}
		a, aOK := level(cm[1], maxCategory)
		b, bOK := a, aOK
		if cm[2] != "" {
			b, bOK = level(cm[2], maxCategory)
		}
		switch {
		case !aOK || !bOK:
			return fmt.Errorf("has a category above c%d", maxCategory)
		case b < a:
			return fmt.Errorf("has the category range %q, which runs backwards", part)
		}
		for c := a; c <= b; c++ {
			if seen[c] {
				return fmt.Errorf("lists category c%d twice", c)
			}
			seen[c] = true
		}
	}
	return nil
}

// level parses the digits of a sensitivity or category, capped at limit.
func level(digits string, limit int) (int, bool) {
	n, err := strconv.Atoi(digits)
	return n, err == nil && n <= limit
}

func (ps *parser) types(e yamlx.Entry, path string) []string {
	items, ok := ps.list(e, path)
	if !ok {
		return nil
	}
	if len(items) == 0 {
		// CodeDeploy keeps an explicit empty list, which matches nothing.
		ps.probs.Warnf(e.Value, "%s: an empty list makes this permission apply to nothing", path)
		return []string{}
	}
	out := []string{}
	for i, it := range items {
		ipath := fmt.Sprintf("%s[%d]", path, i)
		pos := yamlx.PosOf(it)
		s, ok := ps.scalar(it, pos, ipath)
		if !ok {
			continue
		}
		if s != "file" && s != "directory" {
			ps.probs.ErrorAt(pos, "%s: %q is not a permission type; use file or directory", ipath, s)
			continue
		}
		out = append(out, s)
	}
	return out
}
