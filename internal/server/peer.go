package server

import (
	"context"
	"fmt"
	"net"
	"os/user"
	"slices"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Peer is the process at the other end of a connection, as the kernel saw
// it when it connected (SO_PEERCRED, SO_PEERGROUPS).
type Peer struct {
	UID    int
	GID    int
	PID    int
	Groups []int
}

type peerKey struct{}

// WithPeer returns ctx carrying p, as the server's ConnContext stores it.
func WithPeer(ctx context.Context, p *Peer) context.Context {
	return context.WithValue(ctx, peerKey{}, p)
}

// PeerFrom returns the peer stored in ctx by the server's ConnContext.
func PeerFrom(ctx context.Context) (*Peer, bool) {
	p, ok := ctx.Value(peerKey{}).(*Peer)
	return p, ok
}

// InGroup reports whether the peer has gid as primary or supplementary group.
func (p *Peer) InGroup(gid int) bool {
	return p.GID == gid || slices.Contains(p.Groups, gid)
}

func peerOf(c net.Conn) (*Peer, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil, fmt.Errorf("not a unix connection")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil, err
	}
	var p *Peer
	var opErr error
	err = raw.Control(func(fd uintptr) {
		cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err != nil {
			opErr = fmt.Errorf("SO_PEERCRED: %w", err)
			return
		}
		p = &Peer{UID: int(cred.Uid), GID: int(cred.Gid), PID: int(cred.Pid)}
		// The supplementary groups as of connect time; without them a
		// member whose primary group differs would be refused.
		p.Groups, _ = peerGroups(int(fd))
	})
	if err != nil {
		return nil, err
	}
	return p, opErr
}

// peerGroups reads SO_PEERGROUPS (Linux 4.13+), an array of gid_t.
func peerGroups(fd int) ([]int, error) {
	buf := make([]uint32, 64)
	for range 4 {
		size := uint32(len(buf) * 4)
		_, _, errno := syscall.Syscall6(syscall.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&size)), 0)
		if errno == unix.ERANGE {
			buf = make([]uint32, int(size)/4+1)
			continue
		}
		if errno != 0 {
			return nil, errno
		}
		n := int(size) / 4
		out := make([]int, n)
		for i := range n {
			out[i] = int(buf[i])
		}
		return out, nil
	}
	return nil, unix.ERANGE
}

// Group is the resolved socket_group.
type Group struct {
	Name string
	GID  int
}

// LookupGroup resolves a group name or a numeric gid.
func LookupGroup(s string) (Group, error) {
	if gid, err := strconv.Atoi(s); err == nil && gid >= 0 {
		name := s
		if g, err := user.LookupGroupId(s); err == nil {
			name = g.Name
		}
		return Group{Name: name, GID: gid}, nil
	}
	g, err := user.LookupGroup(s)
	if err != nil {
		return Group{}, fmt.Errorf("socket_group %q: %w (create it with systemd-sysusers, as the package does, or set socket_group to an existing group or gid)", s, err)
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return Group{}, fmt.Errorf("socket_group %q: gid %q is not a number", s, g.Gid)
	}
	return Group{Name: g.Name, GID: gid}, nil
}
