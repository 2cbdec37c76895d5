// Package posixacl reads and writes POSIX access control lists natively,
// through the system.posix_acl_access and system.posix_acl_default
// extended attributes, so that neither the agent nor its tests need the
// acl package's setfacl/getfacl on the host. It also holds CodeDeploy's
// rules for turning an appspec's `acls` entries into a full ACL.
package posixacl

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The extended attributes the kernel maps to ACLs.
const (
	XattrAccess  = "system.posix_acl_access"
	XattrDefault = "system.posix_acl_default"
)

// Tag is an entry's kind, with the values of linux/posix_acl.h.
type Tag uint16

// Entry tags.
const (
	UserObj  Tag = 0x01
	User     Tag = 0x02
	GroupObj Tag = 0x04
	Group    Tag = 0x08
	Mask     Tag = 0x10
	Other    Tag = 0x20
)

// Permission bits of an entry.
const (
	Read    uint16 = 4
	Write   uint16 = 2
	Execute uint16 = 1
)

// xattrVersion is POSIX_ACL_XATTR_VERSION; undefinedID marks entries
// that name nobody (the owner, owning group, mask and other entries).
const (
	xattrVersion = 2
	undefinedID  = ^uint32(0)
	headerSize   = 4
	entrySize    = 8
	// maxEntries bounds what Decode accepts; ext4 stores far fewer.
	maxEntries = 1 << 12
)

// Entry is one ACL entry. ID is a uid (User) or gid (Group); other tags
// ignore it.
type Entry struct {
	Tag  Tag
	ID   uint32
	Perm uint16
}

// ACL is a list of entries; Encode sorts them into the kernel's order.
type ACL []Entry

// FromMode is the minimal ACL that a mode alone describes.
func FromMode(mode fs.FileMode) ACL {
	p := uint16(mode.Perm())
	return ACL{{Tag: UserObj, Perm: p >> 6 & 7}, {Tag: GroupObj, Perm: p >> 3 & 7}, {Tag: Other, Perm: p & 7}}
}

// Extended reports whether the ACL holds more than a mode can say.
func (a ACL) Extended() bool {
	for _, e := range a {
		if e.Tag == User || e.Tag == Group || e.Tag == Mask {
			return true
		}
	}
	return false
}

// Get returns the entry of tag (and id, for User and Group).
func (a ACL) Get(tag Tag, id uint32) (Entry, bool) {
	for _, e := range a {
		if e.Tag == tag && (tag != User && tag != Group || e.ID == id) {
			return e, true
		}
	}
	return Entry{}, false
}

func (a ACL) sorted() ACL {
	out := slices.Clone(a)
	slices.SortStableFunc(out, func(x, y Entry) int {
		if x.Tag != y.Tag {
			return int(x.Tag) - int(y.Tag)
		}
		switch {
		case x.ID < y.ID:
			return -1
		case x.ID > y.ID:
			return 1
		}
		return 0
	})
	return out
}

// Valid applies the kernel's rules (posix_acl_valid): exactly one owner,
// owning-group and other entry, named entries unique, and a mask whenever
// there is a named entry.
func (a ACL) Valid() error {
	count := map[Tag]int{}
	named := map[[2]uint32]bool{}
	for _, e := range a {
		if e.Perm&^7 != 0 {
			return fmt.Errorf("entry %s has permission bits %#o", e.Tag, e.Perm)
		}
		switch e.Tag {
		case UserObj, GroupObj, Mask, Other:
			count[e.Tag]++
		case User, Group:
			k := [2]uint32{uint32(e.Tag), e.ID}
			if named[k] {
				return fmt.Errorf("%s %d appears twice", e.Tag, e.ID)
			}
			named[k] = true
		default:
			return fmt.Errorf("unknown entry tag %#x", uint16(e.Tag))
		}
	}
	for _, t := range []Tag{UserObj, GroupObj, Other} {
		if count[t] != 1 {
			return fmt.Errorf("an ACL needs exactly one %s entry, this one has %d", t, count[t])
		}
	}
	if count[Mask] > 1 {
		return errors.New("an ACL has at most one mask entry")
	}
	if len(named) > 0 && count[Mask] == 0 {
		return errors.New("an ACL with named entries needs a mask entry")
	}
	return nil
}

// Encode returns the extended attribute's value.
func (a ACL) Encode() ([]byte, error) {
	if err := a.Valid(); err != nil {
		return nil, err
	}
	s := a.sorted()
	b := make([]byte, headerSize+entrySize*len(s))
	binary.LittleEndian.PutUint32(b, xattrVersion)
	for i, e := range s {
		o := headerSize + entrySize*i
		id := undefinedID
		if e.Tag == User || e.Tag == Group {
			id = e.ID
		}
		binary.LittleEndian.PutUint16(b[o:], uint16(e.Tag))
		binary.LittleEndian.PutUint16(b[o+2:], e.Perm)
		binary.LittleEndian.PutUint32(b[o+4:], id)
	}
	return b, nil
}

// Decode parses an extended attribute's value.
func Decode(b []byte) (ACL, error) {
	if len(b) < headerSize || (len(b)-headerSize)%entrySize != 0 {
		return nil, fmt.Errorf("ACL attribute of %d bytes is malformed", len(b))
	}
	if v := binary.LittleEndian.Uint32(b); v != xattrVersion {
		return nil, fmt.Errorf("ACL attribute version %d, want %d", v, xattrVersion)
	}
	n := (len(b) - headerSize) / entrySize
	if n > maxEntries {
		return nil, fmt.Errorf("ACL attribute has %d entries", n)
	}
	a := make(ACL, 0, n)
	for i := range n {
		o := headerSize + entrySize*i
		e := Entry{Tag: Tag(binary.LittleEndian.Uint16(b[o:])), Perm: binary.LittleEndian.Uint16(b[o+2:])}
		if e.Tag == User || e.Tag == Group {
			e.ID = binary.LittleEndian.Uint32(b[o+4:])
		}
		a = append(a, e)
	}
	return a, a.Valid()
}

// GetFd reads an ACL attribute of an open file; nil when it has none.
func GetFd(fd int, attr string) (ACL, error) {
	buf := make([]byte, headerSize+entrySize*64)
	for {
		n, err := unix.Fgetxattr(fd, attr, buf)
		switch {
		case errors.Is(err, unix.ENODATA), errors.Is(err, unix.EOPNOTSUPP):
			return nil, nil
		case errors.Is(err, unix.ERANGE) && len(buf) < headerSize+entrySize*maxEntries:
			buf = make([]byte, len(buf)*4)
			continue
		case err != nil:
			return nil, fmt.Errorf("read %s: %w", attr, err)
		}
		return Decode(buf[:n])
	}
}

// Lget reads an ACL attribute of path without following a final symlink
// (symlinks have none); nil when it has none.
func Lget(path, attr string) (ACL, error) {
	buf := make([]byte, headerSize+entrySize*maxEntries)
	n, err := unix.Lgetxattr(path, attr, buf)
	switch {
	case errors.Is(err, unix.ENODATA), errors.Is(err, unix.EOPNOTSUPP):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("read %s of %s: %w", attr, path, err)
	}
	return Decode(buf[:n])
}

// SetFd writes an ACL attribute of an open file. The kernel derives the
// mode's group bits from the mask (or the owning group) of an access ACL.
func SetFd(fd int, attr string, a ACL) error {
	b, err := a.Encode()
	if err != nil {
		return err
	}
	if err := unix.Fsetxattr(fd, attr, b, 0); err != nil {
		return fmt.Errorf("write %s: %w", attr, err)
	}
	return nil
}

// RemoveFd removes an ACL attribute; a missing one is not an error.
func RemoveFd(fd int, attr string) error {
	err := unix.Fremovexattr(fd, attr)
	if err == nil || errors.Is(err, unix.ENODATA) || errors.Is(err, unix.EOPNOTSUPP) {
		return nil
	}
	return fmt.Errorf("remove %s: %w", attr, err)
}

func (t Tag) String() string {
	switch t {
	case UserObj, User:
		return "user"
	case GroupObj, Group:
		return "group"
	case Mask:
		return "mask"
	case Other:
		return "other"
	}
	return "tag" + strconv.Itoa(int(t))
}

// PermString is "rwx" with dashes, as getfacl writes it.
func PermString(p uint16) string {
	b := []byte("---")
	if p&Read != 0 {
		b[0] = 'r'
	}
	if p&Write != 0 {
		b[1] = 'w'
	}
	if p&Execute != 0 {
		b[2] = 'x'
	}
	return string(b)
}

// Format writes the ACL in getfacl's short form, entries in the kernel's
// order: "user::rw-,user:bob:r--,group::r--,mask::r--,other::---". name
// turns a uid or gid into a name ("" for the number).
func (a ACL) Format(userName, groupName func(uint32) string) string {
	var parts []string
	for _, e := range a.sorted() {
		q := ""
		switch e.Tag {
		case User:
			q = userName(e.ID)
			if q == "" {
				q = strconv.FormatUint(uint64(e.ID), 10)
			}
		case Group:
			q = groupName(e.ID)
			if q == "" {
				q = strconv.FormatUint(uint64(e.ID), 10)
			}
		}
		parts = append(parts, e.Tag.String()+":"+q+":"+PermString(e.Perm))
	}
	return strings.Join(parts, ",")
}
