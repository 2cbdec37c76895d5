package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/rollback-agent/rollback-agent/internal/api"
)

// Members of the socket group may read the API, and whatever they may
// read they may ask for as often and as many times at once as they like.
// What they hold is bounded here, per uid and in total, so that the
// agent's descriptors and goroutines are never theirs to exhaust: root
// (and the agent's own user) are never counted against these limits and
// so are always answered, whatever the others hold. (What a read costs,
// a health round or an EC2 catalogue, is bounded in the daemon, which
// shares one run among all askers.)

// Limits bound what users other than root may hold of the API at once.
type Limits struct {
	// ConnsPerUID is the connections one uid may hold open.
	ConnsPerUID int
	// Conns is the connections all uids but root's may hold together: the
	// reserve left for root is everything above it.
	Conns int
	// StreamsPerUID is the event and log streams one uid may follow.
	StreamsPerUID int
}

// DefaultLimits are the limits of a server whose Options leave them zero.
var DefaultLimits = Limits{ConnsPerUID: 32, Conns: 128, StreamsPerUID: 4}

// refusers bounds the goroutines that answer refused connections: beyond
// it a refused connection is closed without an answer.
const refusers = 8

// refuseWait bounds how long a refused connection is read before its
// answer, so that the request it sent is consumed (closing a unix socket
// with unread data would reset the answer away).
const refuseWait = time.Second

// withDefaults fills zero fields, and keeps the total for others under a
// quarter of the descriptors the process may open.
func (l Limits) withDefaults() Limits {
	if l.ConnsPerUID <= 0 {
		l.ConnsPerUID = DefaultLimits.ConnsPerUID
	}
	if l.Conns <= 0 {
		l.Conns = DefaultLimits.Conns
	}
	if l.StreamsPerUID <= 0 {
		l.StreamsPerUID = DefaultLimits.StreamsPerUID
	}
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err == nil && rl.Cur > 0 && rl.Cur/4 < uint64(l.Conns) {
		l.Conns = max(int(rl.Cur/4), 1)
	}
	l.ConnsPerUID = min(l.ConnsPerUID, l.Conns)
	return l
}

// counter counts what each uid holds.
type counter struct {
	mu    sync.Mutex
	byUID map[int]int
	total int
}

// take counts one more for uid unless that passes perUID or total (total
// < 0: none); it reports whether it counted.
func (c *counter) take(uid, perUID, total int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byUID[uid] >= perUID || (total >= 0 && c.total >= total) {
		return false
	}
	if c.byUID == nil {
		c.byUID = map[int]int{}
	}
	c.byUID[uid]++
	c.total++
	return true
}

func (c *counter) give(uid int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byUID[uid]--; c.byUID[uid] <= 0 {
		delete(c.byUID, uid)
	}
	c.total--
}

// limitListener accepts connections and reads their peer's credentials at
// once; a connection of a user over its limits is answered 429 and
// closed before the HTTP server ever holds it.
type limitListener struct {
	net.Listener
	s       *Server
	conns   counter
	refuser chan struct{}

	logMu   sync.Mutex
	refused map[int]*refusals
}

func newLimitListener(ln net.Listener, s *Server) *limitListener {
	return &limitListener{Listener: ln, s: s, refuser: make(chan struct{}, refusers)}
}

// limitedConn is an accepted connection with its peer, which gives its
// place back when it closes.
type limitedConn struct {
	net.Conn
	peer    *Peer
	peerErr error
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	c.once.Do(func() {
		if c.release != nil {
			c.release()
		}
	})
	return c.Conn.Close()
}

// CloseWrite half-closes the connection as the unix socket does: net/http
// uses it to answer a request it refuses (431, 414) before closing, so the
// client reads the answer instead of a reset (its unread bytes would make
// the kernel reset the connection on a plain close).
func (c *limitedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// Accept returns the next connection the limits allow.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		p, perr := peerOf(c)
		lc := &limitedConn{Conn: c, peer: p, peerErr: perr}
		if perr != nil || l.s.isPrivileged(p) {
			// Without credentials the request is refused (403) anyway.
			return lc, nil
		}
		lim := l.s.limits
		if l.conns.take(p.UID, lim.ConnsPerUID, lim.Conns) {
			uid := p.UID
			lc.release = func() { l.conns.give(uid) }
			return lc, nil
		}
		l.refuse(c, p)
	}
}

// refuse answers a connection over the limits with 429. A client that
// already sent its request (agentctl, curl) is answered at once, from the
// accept loop, without a goroutine; one that has not is given a moment
// in a goroutine of a bounded pool, and closed without an answer when the
// pool is busy.
func (l *limitListener) refuse(c net.Conn, p *Peer) {
	l.logRefusal(p)
	lim := l.s.limits
	msg := fmt.Sprintf("uid %d holds %d connections to the agent (at most %d per user other than root, %d for all of them together); close some and try again",
		p.UID, l.conns.held(p.UID), lim.ConnsPerUID, lim.Conns)
	if head, ok := readNow(c); ok && bytes.Contains(head, []byte("\r\n\r\n")) {
		writeNow(c, http.StatusTooManyRequests, api.CodeTooMany, msg)
		c.Close()
		return
	}
	select {
	case l.refuser <- struct{}{}:
	default:
		c.Close()
		return
	}
	go func() {
		defer func() { <-l.refuser }()
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(refuseWait))
		readHead(c)
		_ = c.SetWriteDeadline(time.Now().Add(refuseWait))
		c.Write(rawAnswer(http.StatusTooManyRequests, api.CodeTooMany, msg))
	}()
}

// logRefusal logs the first refusal of a uid, then at most one line a
// minute with the count: a flood of connections is not a flood of logs.
func (l *limitListener) logRefusal(p *Peer) {
	l.logMu.Lock()
	if l.refused == nil {
		l.refused = map[int]*refusals{}
	}
	r := l.refused[p.UID]
	if r == nil {
		r = &refusals{}
		l.refused[p.UID] = r
	}
	r.n++
	now := time.Now()
	due := now.Sub(r.logged) >= time.Minute
	n := r.n
	if due {
		r.logged, r.n = now, 0
	}
	l.logMu.Unlock()
	if due {
		lim := l.s.limits
		l.s.opts.Log.Warn("connections refused: a user other than root is over the API's limits",
			zap.Int("uid", p.UID), zap.Int("pid", p.PID), zap.Int("refused", n), zap.Int("per_uid", lim.ConnsPerUID), zap.Int("total", lim.Conns))
	}
}

type refusals struct {
	n      int
	logged time.Time
}

// readNow reads what the client has already sent, without waiting.
func readNow(c net.Conn) ([]byte, bool) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil, false
	}
	buf := make([]byte, 8<<10)
	n := 0
	err = raw.Read(func(fd uintptr) bool {
		for n < len(buf) {
			k, _, rerr := unix.Recvfrom(int(fd), buf[n:], unix.MSG_DONTWAIT)
			if rerr != nil || k <= 0 {
				break
			}
			n += k
		}
		return true
	})
	return buf[:n], err == nil
}

// writeNow writes a whole answer without waiting: it is small, and the
// socket's buffer of a new connection is empty.
func writeNow(c net.Conn, code int, errCode, msg string) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return
	}
	b := rawAnswer(code, errCode, msg)
	_ = raw.Write(func(fd uintptr) bool {
		_, _ = unix.SendmsgN(int(fd), b, nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		return true
	})
}

func (c *counter) held(uid int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.byUID[uid]
}

// readHead reads what a client sent until the end of its request head,
// 8 KiB or the deadline, whichever is first.
func readHead(c net.Conn) {
	buf := make([]byte, 8<<10)
	n := 0
	for n < len(buf) {
		k, err := c.Read(buf[n:])
		n += k
		if err != nil || bytes.Contains(buf[:n], []byte("\r\n\r\n")) {
			return
		}
	}
}

// rawAnswer is a whole HTTP answer with an api.ErrorBody, for a
// connection the HTTP server never saw.
func rawAnswer(code int, errCode, msg string) []byte {
	body, _ := json.Marshal(api.ErrorBody{SchemaVersion: api.SchemaVersion, Error: msg, Code: errCode})
	return fmt.Appendf(nil, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		code, http.StatusText(code), len(body), body)
}

// errTooManyStreams is what a stream over the limit is answered with.
var errTooManyStreams = errors.New("too many streams")

// stream takes a stream's place for the request's peer; release gives it
// back. Root's streams are not counted.
func (s *Server) stream(r *http.Request) (release func(), err error) {
	p, ok := PeerFrom(r.Context())
	if !ok || s.isPrivileged(p) {
		return func() {}, nil
	}
	if !s.streams.take(p.UID, s.limits.StreamsPerUID, -1) {
		return nil, &Error{Status: http.StatusTooManyRequests, Code: api.CodeTooMany,
			Err: fmt.Errorf("%w: uid %d follows %d event or log streams already (at most %d per user other than root); end one and try again",
				errTooManyStreams, p.UID, s.streams.held(p.UID), s.limits.StreamsPerUID)}
	}
	uid := p.UID
	return func() { s.streams.give(uid) }, nil
}
