package hooks

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

const (
	// hookPATH is the PATH a runas hook gets: the agent's own PATH may
	// name directories only root should use, and `su` users complained
	// that PATH differed between accounts (#73, #181).
	hookPATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	// passwdFile is read for the login shell, which os/user does not expose.
	passwdFile = "/etc/passwd"
	// defaultShell is login(1)'s choice for an empty shell field, and ours
	// for accounts that come from NSS rather than /etc/passwd.
	defaultShell = "/bin/sh"
)

// BaseEnv is the agent's environment minus what must not leak into hooks:
// NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID, LISTEN_FDS, LISTEN_PID,
// LISTEN_FDNAMES. systemd would otherwise take a hook's messages for the
// agent's (a hook running a Type=notify service by hand would report READY
// or feed the watchdog in the agent's name) and socket-activated programs
// started by a hook would try to adopt fds that are not theirs.
func BaseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !agentOnly(envKey(kv)) {
			env = append(env, kv)
		}
	}
	return env
}

// agentOnly reports whether key is addressed to the agent process itself by
// its service manager.
func agentOnly(key string) bool {
	switch key {
	case "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
		"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES":
		return true
	}
	return false
}

// envKey returns the name part of KEY=VALUE (the whole entry when there is
// no '=', which is how the kernel would see such an entry too).
func envKey(kv string) string {
	if i := strings.IndexByte(kv, '='); i >= 0 {
		return kv[:i]
	}
	return kv
}

// mergeEnv lays the layers over each other: a later entry replaces an
// earlier one with the same key, in the earlier one's position, so that each
// key appears exactly once. Duplicates matter because getenv(3) returns the
// first match while shells keep the last, so a duplicated key would mean
// different things to different programs of one hook.
func mergeEnv(layers ...[]string) []string {
	var out []string
	index := make(map[string]int)
	for _, layer := range layers {
		for _, kv := range layer {
			k := envKey(kv)
			if i, ok := index[k]; ok {
				out[i] = kv
				continue
			}
			index[k] = len(out)
			out = append(out, kv)
		}
	}
	return out
}

// checkEnv rejects malformed Spec.Env entries: they come from the caller, so
// a bad one is a bug there and is better reported than silently dropped.
func checkEnv(env []string) error {
	for _, kv := range env {
		i := strings.IndexByte(kv, '=')
		if i <= 0 {
			return fmt.Errorf("environment entry %q is not KEY=VALUE", kv)
		}
		if strings.IndexByte(kv, 0) >= 0 {
			return fmt.Errorf("environment entry for %s contains a NUL byte", kv[:i])
		}
	}
	return nil
}

// account is what running a hook as another user needs to know about it.
type account struct {
	name   string
	uid    uint32
	gid    uint32
	groups []uint32
	home   string
	shell  string
}

// lookupAccount resolves a runas user. It replaces `su`, which CodeDeploy
// runs without a login shell and which fails for accounts whose shell is
// nologin or that need a terminal (#191).
func lookupAccount(name string) (*account, error) {
	u, err := user.Lookup(name)
	if err != nil {
		var unknown user.UnknownUserError
		if errors.As(err, &unknown) {
			return nil, fmt.Errorf("no user %q on this host", name)
		}
		return nil, fmt.Errorf("looking up user %q: %w", name, err)
	}
	a := &account{name: u.Username, home: u.HomeDir}
	if a.uid, err = parseID(u.Uid); err != nil {
		return nil, fmt.Errorf("user %q: uid: %w", name, err)
	}
	if a.gid, err = parseID(u.Gid); err != nil {
		return nil, fmt.Errorf("user %q: gid: %w", name, err)
	}
	// The supplementary groups are what initgroups(3) would set: without
	// them a hook run as "app" could not read files group-owned by the
	// app's secondary groups, unlike under `su`.
	gids, err := u.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("listing the groups of user %q: %w", name, err)
	}
	for _, g := range gids {
		id, err := parseID(g)
		if err != nil {
			return nil, fmt.Errorf("user %q: group id: %w", name, err)
		}
		a.groups = append(a.groups, id)
	}
	if !slices.Contains(a.groups, a.gid) {
		// initgroups(3) always includes the primary group; keep that
		// true whichever group database answered.
		a.groups = append([]uint32{a.gid}, a.groups...)
	}
	if a.shell, err = loginShell(passwdFile, u.Username); err != nil {
		return nil, err
	}
	return a, nil
}

func parseID(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%q is not a numeric id", s)
	}
	return uint32(n), nil
}

// loginShell returns the 7th field of name's line in the passwd file, or
// defaultShell when the field is empty or the user is not listed there (an
// NSS/LDAP account): SHELL is informational for a hook, not worth failing on.
func loginShell(path, name string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return defaultShell, nil
		}
		return "", fmt.Errorf("reading login shell of %q: %w", name, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) < 7 || fields[0] != name {
			continue
		}
		if fields[6] == "" {
			return defaultShell, nil
		}
		return fields[6], nil
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("reading login shell of %q from %s: %w", name, path, err)
	}
	return defaultShell, nil
}

// env is the login-like part of a runas hook's environment: what login(1)
// sets, so that tools run by the hook find the user's home and config
// rather than root's.
func (a *account) env() []string {
	return []string{
		"HOME=" + a.home,
		"USER=" + a.name,
		"LOGNAME=" + a.name,
		"SHELL=" + a.shell,
		"PATH=" + hookPATH,
	}
}

// credential switches the child to the account. NoSetGroups stays false so
// that root's supplementary groups are replaced rather than inherited.
func (a *account) credential() *syscall.Credential {
	return &syscall.Credential{Uid: a.uid, Gid: a.gid, Groups: a.groups, NoSetGroups: false}
}

// hookEnv builds a hook's environment: the agent's (minus what is addressed
// to the agent alone), then for a runas hook the user's login-like
// variables, then the caller's deployment variables, which win.
func hookEnv(acct *account, extra []string) []string {
	if acct == nil {
		return mergeEnv(BaseEnv(), extra)
	}
	return mergeEnv(BaseEnv(), acct.env(), extra)
}
