package posixacl

import (
	"errors"
	"fmt"
	"io/fs"
	"os/user"
	"regexp"
	"strconv"
)

// specRe is setfacl's entry syntax as an appspec's `acls` uses it:
// [d[efault]:]{u[ser]|g[roup]|o[ther]|m[ask]}:[name]:perms, perms being up
// to three of r, w, x, - or one octal digit.
var specRe = regexp.MustCompile(`^(?:(d|default):)?(u|user|g|group|o|other|m|mask):([^:]*):([rwx-]{1,3}|[0-7])$`)

// Spec is one entry of an appspec's `acls`, parsed.
type Spec struct {
	Default bool
	Tag     Tag // UserObj/User, GroupObj/Group, Mask or Other
	Name    string
	Perm    uint16
}

// ParseSpec parses one setfacl-style entry.
func ParseSpec(s string) (Spec, error) {
	m := specRe.FindStringSubmatch(s)
	if m == nil {
		return Spec{}, fmt.Errorf("%q is not an ACL entry: want [d[efault]:]u[ser]|g[roup]|o[ther]|m[ask]:[name]:perms", s)
	}
	sp := Spec{Default: m[1] != "", Name: m[3]}
	switch m[2][:1] {
	case "u":
		sp.Tag = UserObj
		if sp.Name != "" {
			sp.Tag = User
		}
	case "g":
		sp.Tag = GroupObj
		if sp.Name != "" {
			sp.Tag = Group
		}
	case "m":
		sp.Tag = Mask
	case "o":
		sp.Tag = Other
	}
	if (sp.Tag == Mask || sp.Tag == Other) && sp.Name != "" {
		return Spec{}, fmt.Errorf("%q names someone in a %s entry, which takes no name", s, sp.Tag)
	}
	if n, err := strconv.ParseUint(m[4], 8, 8); err == nil {
		sp.Perm = uint16(n)
		return sp, nil
	}
	for _, c := range m[4] {
		switch c {
		case 'r':
			sp.Perm |= Read
		case 'w':
			sp.Perm |= Write
		case 'x':
			sp.Perm |= Execute
		}
	}
	return sp, nil
}

// Resolver turns a user (User) or group (Group) name into its id.
type Resolver func(tag Tag, name string) (uint32, error)

// LookupID resolves names with the host's user and group databases, and
// accepts numeric ids as setfacl does.
func LookupID(tag Tag, name string) (uint32, error) {
	if n, err := strconv.ParseUint(name, 10, 32); err == nil {
		return uint32(n), nil
	}
	var id string
	if tag == User {
		u, err := user.Lookup(name)
		if err != nil {
			return 0, err
		}
		id = u.Uid
	} else {
		g, err := user.LookupGroup(name)
		if err != nil {
			return 0, err
		}
		id = g.Gid
	}
	n, err := strconv.ParseUint(id, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%s %q has the non-numeric id %q", tag, name, id)
	}
	return uint32(n), nil
}

// Build turns appspec `acls` into the access ACL (and, for a directory
// with default entries, the default ACL) that CodeDeploy's agent sets
// with `setfacl --set` (install_instruction.rb ChangeAclCommand): the
// owner, owning-group and other entries come from mode, and when named
// entries have no mask, the mask is the mode's group bits. So
// u:ec2-user:rw on a 640 file grants r-- in effect, exactly as there;
// letting setfacl compute the mask would grant rw-. Default entries get
// the same treatment, their mask being the default group entry.
func Build(mode fs.FileMode, specs []Spec, isDir bool, resolve Resolver) (access, def ACL, err error) {
	base := FromMode(mode)
	access = append(ACL(nil), base...)
	var hasDefault bool
	var defSpecs []Spec
	for _, sp := range specs {
		if sp.Default {
			hasDefault = true
			defSpecs = append(defSpecs, sp)
			continue
		}
		if access, err = put(access, sp, resolve); err != nil {
			return nil, nil, err
		}
	}
	if hasDefault && !isDir {
		return nil, nil, errors.New("a default ACL (d:...) applies to directories only, as CodeDeploy's agent says")
	}
	access = withMask(access)
	if err := access.Valid(); err != nil {
		return nil, nil, err
	}
	if !hasDefault {
		return access, nil, nil
	}
	var d ACL
	for _, sp := range defSpecs {
		if d, err = put(d, sp, resolve); err != nil {
			return nil, nil, err
		}
	}
	for _, b := range base {
		if _, ok := d.Get(b.Tag, 0); !ok {
			d = append(d, b)
		}
	}
	d = withMask(d)
	if err := d.Valid(); err != nil {
		return nil, nil, fmt.Errorf("default ACL: %w", err)
	}
	return access, d, nil
}

// put sets one entry, replacing an unnamed entry of the same tag (a base
// entry given explicitly); a named entry given twice is an error, as it
// is for setfacl.
func put(a ACL, sp Spec, resolve Resolver) (ACL, error) {
	e := Entry{Tag: sp.Tag, Perm: sp.Perm}
	if sp.Tag == User || sp.Tag == Group {
		id, err := resolve(sp.Tag, sp.Name)
		if err != nil {
			return nil, fmt.Errorf("ACL entry for %s %q: %w", sp.Tag, sp.Name, err)
		}
		e.ID = id
		if _, dup := a.Get(sp.Tag, id); dup {
			return nil, fmt.Errorf("ACL names %s %q twice", sp.Tag, sp.Name)
		}
		return append(a, e), nil
	}
	for i := range a {
		if a[i].Tag == sp.Tag {
			a[i] = e
			return a, nil
		}
	}
	return append(a, e), nil
}

// withMask adds CodeDeploy's mask (the owning group's permissions) to an
// ACL with named entries and no mask.
func withMask(a ACL) ACL {
	if _, ok := a.Get(Mask, 0); ok || !a.Extended() {
		return a
	}
	g, _ := a.Get(GroupObj, 0)
	return append(a, Entry{Tag: Mask, Perm: g.Perm})
}
