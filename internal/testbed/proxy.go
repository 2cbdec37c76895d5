package testbed

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Op identifies an AWS call as the proxy sees it.
type Op struct {
	Service string // ec2, s3, monitoring, codedeploy, imds, ...
	Action  string // CreateSnapshots, "GET object", "PUT /latest/api/token", ...
}

func (o Op) String() string { return o.Service + ":" + o.Action }

// FaultKind is what a fault does to a matching request.
type FaultKind int

// Faults the proxy can inject.
const (
	// FaultThrottle answers with the service's throttling error without
	// forwarding (EC2: 503 RequestLimitExceeded).
	FaultThrottle FaultKind = iota + 1
	// FaultServerError answers 500 InternalError without forwarding.
	FaultServerError
	// FaultResetAfterUpstream forwards the request (the upstream acts on
	// it), then resets the client connection instead of answering: the
	// ambiguous failure.
	FaultResetAfterUpstream
	// FaultForbidden answers 403 with an empty body (IMDS turned off).
	FaultForbidden
	// FaultLatency delays the request, then forwards it.
	FaultLatency
	// FaultErrorCode answers with an EC2-style error whose code is Code.
	FaultErrorCode
	// FaultHold holds the request until Release is closed (or the client
	// gives up), then forwards it: a call in flight for exactly as long
	// as the test needs to look at what happens meanwhile, where a
	// latency would be a guess.
	FaultHold
)

// Fault is one injection rule.
type Fault struct {
	Service string // empty: any service
	Action  string // empty: any action
	Kind    FaultKind
	// Rate is the probability per matching request; 0 means always.
	Rate float64
	// Count limits the rule to that many injections; 0 means unlimited.
	Count int
	// Latency for FaultLatency.
	Latency time.Duration
	// Release ends the hold of FaultHold.
	Release <-chan struct{}
	// Code and Status for FaultErrorCode (Status defaults to 400).
	Code   string
	Status int

	hits int
}

func (f *Fault) matches(op Op) bool {
	return (f.Service == "" || f.Service == op.Service) && (f.Action == "" || f.Action == op.Action)
}

// Proxy is the project's AWS proxy: a reverse proxy that counts calls by
// operation and injects faults. The bed's AWS proxy also answers, edits or
// rewrites the EC2 calls that moto gets wrong or lacks, and plays the EBS
// data plane (the routes in motogaps.go).
type Proxy struct {
	Name     string
	URL      string
	upstream *url.URL
	rp       *httputil.ReverseProxy
	// client forwards intercepted calls, whose answers are buffered and
	// may be rewritten (rp streams everything else untouched).
	client *http.Client
	srv    *http.Server
	ln     net.Listener

	mu        sync.Mutex
	faults    []*Fault
	counts    map[string]int
	errCounts map[string]int // "service:action code" → answers with that error
	calls     []Call
	rng       *rand.Rand
	intercept interceptor
	// authz, when set, decides each request before it reaches its hooks
	// or moto: the bed's IAM enforcement (enforce.go); signer signs the
	// requests it passes as the bed's administrator.
	authz  authorizer
	signer func(*http.Request, []byte) error
}

// authorizer decides one request: deny answers in the service's place;
// resign has the request signed again as the bed's administrator before
// it reaches moto (moto cannot evaluate what the bed evaluated); after,
// when set, may rewrite moto's answer.
type authorizer func(r *http.Request, body []byte, op Op) (deny *reply, resign bool, after func(*call, *reply) *reply)

// StartProxy starts a proxy in front of upstream on a free loopback port.
func StartProxy(name, upstream string) (*Proxy, error) {
	u, err := url.Parse(upstream)
	if err != nil {
		return nil, fmt.Errorf("testbed: proxy %s: upstream %q: %w", name, upstream, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("testbed: proxy %s: listen: %w", name, err)
	}
	p := &Proxy{
		Name:      name,
		URL:       "http://" + ln.Addr().String(),
		upstream:  u,
		ln:        ln,
		counts:    map[string]int{},
		errCounts: map[string]int{},
		rng:       rand.New(rand.NewPCG(1, 2)),
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = pr.In.Host // SigV4 signed the original Host
		},
		ErrorLog: nil,
	}
	p.client = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}
	go p.srv.Serve(ln) //nolint:errcheck // ends with Stop
	return p, nil
}

// Stop closes the proxy.
func (p *Proxy) Stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = p.srv.Shutdown(ctx)
	p.client.CloseIdleConnections()
}

// setInterceptor installs the per-operation hooks (the test bed's EC2
// additions); nil restores plain forwarding.
func (p *Proxy) setInterceptor(i interceptor) {
	p.mu.Lock()
	p.intercept = i
	p.mu.Unlock()
}

func (p *Proxy) hooksFor(op Op) *hooks {
	p.mu.Lock()
	i := p.intercept
	p.mu.Unlock()
	if i == nil {
		return nil
	}
	return i(op)
}

// setAuthz installs the IAM enforcement's decision and its signer.
func (p *Proxy) setAuthz(a authorizer, signer func(*http.Request, []byte) error) {
	p.mu.Lock()
	p.authz, p.signer = a, signer
	p.mu.Unlock()
}

// resign signs an upstream request again with the signer.
func (p *Proxy) resign(req *http.Request, body []byte) error {
	p.mu.Lock()
	signer := p.signer
	p.mu.Unlock()
	if signer == nil {
		return fmt.Errorf("no signer")
	}
	return signer(req, body)
}

// AddFault installs a rule and returns a function that removes it.
func (p *Proxy) AddFault(f Fault) func() {
	p.mu.Lock()
	defer p.mu.Unlock()
	fp := &f
	p.faults = append(p.faults, fp)
	return func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		for i, x := range p.faults {
			if x == fp {
				p.faults = append(p.faults[:i], p.faults[i+1:]...)
				return
			}
		}
	}
}

// ClearFaults removes every rule.
func (p *Proxy) ClearFaults() {
	p.mu.Lock()
	p.faults = nil
	p.mu.Unlock()
}

// Count returns how many requests for service:action went through.
func (p *Proxy) Count(service, action string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counts[Op{service, action}.String()]
}

// Counts returns a copy of all counters.
func (p *Proxy) Counts() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]int, len(p.counts))
	for k, v := range p.counts {
		out[k] = v
	}
	return out
}

var errorCode = regexp.MustCompile(`<Code>([^<]+)</Code>`)

// countError counts an error answer of an intercepted call by its code.
func (p *Proxy) countError(op Op, rep *reply) {
	if rep == nil || rep.Status < 400 {
		return
	}
	code := fmt.Sprint(rep.Status)
	if m := errorCode.FindSubmatch(rep.Body); m != nil {
		code = string(m[1])
	}
	p.mu.Lock()
	p.errCounts[op.String()+" "+code]++
	p.mu.Unlock()
}

// ErrorCount is how many answers to service:action the bed (or moto,
// through a call the bed intercepts: every EC2 call) gave with the error
// code since the last ResetCounts: how a test knows a rule was met.
func (p *Proxy) ErrorCount(service, action, code string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.errCounts[Op{service, action}.String()+" "+code]
}

// ResetCounts zeroes the counters.
func (p *Proxy) ResetCounts() {
	p.mu.Lock()
	p.counts = map[string]int{}
	p.errCounts = map[string]int{}
	p.calls = nil
	p.mu.Unlock()
}

// Call is one request the proxy saw, for telling which calls fell inside
// a step of the agent (the benchmarks' "calls on the critical path").
type Call struct {
	At time.Time
	Op Op
}

// maxCallLog bounds the call log of a long test.
const maxCallLog = 100000

// Calls returns the requests seen since the last ResetCounts, in order.
func (p *Proxy) Calls() []Call {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Call(nil), p.calls...)
}

// pick returns the fault to apply to op, if any, and counts the call.
func (p *Proxy) pick(op Op) *Fault {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counts[op.String()]++
	if len(p.calls) < maxCallLog {
		p.calls = append(p.calls, Call{At: time.Now(), Op: op})
	}
	for _, f := range p.faults {
		if !f.matches(op) || (f.Count > 0 && f.hits >= f.Count) {
			continue
		}
		if f.Rate > 0 && p.rng.Float64() >= f.Rate {
			continue
		}
		f.hits++
		return f
	}
	return nil
}

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	r.Body.Close()
	if err != nil {
		http.Error(w, "proxy: read body: "+err.Error(), http.StatusBadGateway)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	op := classify(r, body)
	// Counting and fault injection come first and see every request once,
	// whether the proxy then forwards it, rewrites it or answers it.
	f := p.pick(op)
	h := p.hooksFor(op)
	p.mu.Lock()
	authz := p.authz
	p.mu.Unlock()
	resign := false
	if authz != nil {
		deny, rs, after := authz(r, body, op)
		if deny != nil {
			deny.write(w)
			return
		}
		resign = rs
		if resign || after != nil {
			// Buffered from here: the request is signed again, or the
			// answer may be rewritten.
			h = withAfter(h, after)
		}
	}
	kind := FaultKind(0)
	if f != nil {
		kind = f.Kind
	}
	switch kind {
	case FaultForbidden:
		w.WriteHeader(http.StatusForbidden)
		return
	case FaultThrottle:
		writeAWSError(w, op, throttleStatus(op), throttleCode(op), "Rate exceeded (injected by the test bed)")
		return
	case FaultServerError:
		writeAWSError(w, op, http.StatusInternalServerError, "InternalError", "An internal error has occurred (injected by the test bed)")
		return
	case FaultErrorCode:
		st := f.Status
		if st == 0 {
			st = http.StatusBadRequest
		}
		writeAWSError(w, op, st, f.Code, f.Code+" (injected by the test bed)")
		return
	case FaultLatency:
		time.Sleep(f.Latency)
	case FaultHold:
		select {
		case <-f.Release:
		case <-r.Context().Done():
			return
		}
	}
	if h == nil {
		if kind == FaultResetAfterUpstream {
			rec := &discardWriter{h: http.Header{}}
			p.rp.ServeHTTP(rec, r)
			resetConn(w)
			return
		}
		p.rp.ServeHTTP(w, r)
		return
	}
	// Intercepted: the hooks run in full (moto acts, side effects happen)
	// before a reset, so the ambiguous failure stays ambiguous.
	rep := p.serveIntercepted(r, body, op, h, resign)
	p.countError(op, rep)
	if kind == FaultResetAfterUpstream {
		resetConn(w)
		return
	}
	rep.write(w)
}

// resetConn closes the client's connection with a TCP RST.
func resetConn(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		return
	}
	c, _, err := hj.Hijack()
	if err != nil {
		return
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	c.Close()
}

type discardWriter struct {
	h    http.Header
	code int
}

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (d *discardWriter) WriteHeader(code int)        { d.code = code }

var credentialScope = regexp.MustCompile(`Credential=[^/]+/[0-9]+/[^/]+/([^/]+)/aws4_request`)

// classify names the operation of a request from its signature scope and
// protocol: query (Action=), JSON (X-Amz-Target), REST (S3), or IMDS.
func classify(r *http.Request, body []byte) Op {
	if strings.HasPrefix(r.URL.Path, "/latest/") {
		return Op{Service: "imds", Action: r.Method + " " + r.URL.Path}
	}
	svc := ""
	if m := credentialScope.FindStringSubmatch(r.Header.Get("Authorization")); m != nil {
		svc = m[1]
	}
	if t := r.Header.Get("X-Amz-Target"); t != "" {
		if i := strings.LastIndex(t, "."); i >= 0 {
			return Op{Service: svc, Action: t[i+1:]}
		}
	}
	if ct := r.Header.Get("Content-Type"); strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
		if v, err := url.ParseQuery(string(body)); err == nil && v.Get("Action") != "" {
			return Op{Service: svc, Action: v.Get("Action")}
		}
	}
	if svc == "s3" {
		kind := "bucket"
		if parts := strings.SplitN(strings.TrimPrefix(r.URL.Path, "/"), "/", 2); len(parts) == 2 && parts[1] != "" {
			kind = "object"
		}
		return Op{Service: svc, Action: r.Method + " " + kind}
	}
	return Op{Service: svc, Action: r.Method + " " + r.URL.Path}
}

func throttleStatus(op Op) int {
	if op.Service == "ec2" || op.Service == "s3" {
		return http.StatusServiceUnavailable
	}
	return http.StatusBadRequest
}

func throttleCode(op Op) string {
	switch op.Service {
	case "ec2":
		return "RequestLimitExceeded"
	case "s3":
		return "SlowDown"
	default:
		return "ThrottlingException"
	}
}

// writeAWSError answers in the error format of op's protocol.
func writeAWSError(w http.ResponseWriter, op Op, status int, code, msg string) {
	switch op.Service {
	case "ec2":
		w.Header().Set("Content-Type", "text/xml")
		w.WriteHeader(status)
		fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>`+"\n"+
			`<Response><Errors><Error><Code>%s</Code><Message>%s</Message></Error></Errors><RequestID>testbed-%d</RequestID></Response>`,
			code, msg, time.Now().UnixNano())
	case "s3", "monitoring":
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(status)
		fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>`+"\n"+`<Error><Code>%s</Code><Message>%s</Message><RequestId>testbed</RequestId></Error>`, code, msg)
	default:
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"__type":%q,"message":%q}`, code, msg)
	}
}

func readAll(resp *http.Response) string {
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
