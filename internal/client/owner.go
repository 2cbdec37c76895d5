package client

import (
	"fmt"
	"net"
	"os"
	"slices"
	"syscall"

	"golang.org/x/sys/unix"
)

// UntrustedSocketError means the socket, or the process answering on it,
// belongs to a user agentctl does not trust: someone may have put their
// own server where the agent's socket should be, to be told what root
// deploys or to answer in its place. Nothing was sent.
type UntrustedSocketError struct {
	Socket string
	Why    string
}

func (e *UntrustedSocketError) Error() string {
	return fmt.Sprintf("refusing to talk to %s: %s; the agent's socket belongs to root (or pass --socket-owner for an agent run as another user)", e.Socket, e.Why)
}

func trustedOwner(uid uint32, owners []int) bool {
	return uid == 0 || int(uid) == os.Geteuid() || slices.Contains(owners, int(uid))
}

// checkSocketOwner looks at the socket file: a missing one is left for
// the dial to report (the agent is not running); another owner is an
// impostor, named before anything is sent.
func checkSocketOwner(path string, owners []int) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return &UntrustedSocketError{Socket: path, Why: fmt.Sprintf("it is not a socket (%s)", fi.Mode().Type())}
	}
	if !trustedOwner(st.Uid, owners) {
		return &UntrustedSocketError{Socket: path, Why: fmt.Sprintf("the socket is owned by uid %d", st.Uid)}
	}
	return nil
}

// checkPeer asks the kernel who listens at the other end (SO_PEERCRED):
// the socket file can be swapped between the look and the connect, the
// credentials of the connection cannot.
func checkPeer(c net.Conn, path string, owners []int) error {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return fmt.Errorf("peer credentials of %s: %w", path, err)
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return fmt.Errorf("peer credentials of %s: %w", path, err)
	}
	if credErr != nil {
		return fmt.Errorf("peer credentials of %s: %w", path, credErr)
	}
	if !trustedOwner(cred.Uid, owners) {
		return &UntrustedSocketError{Socket: path, Why: fmt.Sprintf("the process answering on it (pid %d) runs as uid %d", cred.Pid, cred.Uid)}
	}
	return nil
}
