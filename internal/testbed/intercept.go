package testbed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/aws/smithy-go"
)

// hooks change how the proxy handles one operation. Any of them may be nil.
// They run after fault injection and counting, so a test's faults and
// counters see the agent's request exactly as it was sent.
type hooks struct {
	// Answer replies in moto's place: the request never reaches moto.
	Answer func(*call) *reply
	// Before may edit the request (c.Form) before it is forwarded, or
	// refuse it by returning a reply (then it is not forwarded either).
	Before func(*call) *reply
	// After sees moto's reply and returns the one the client gets. It may
	// rewrite it, and runs side effects when moto accepted the call
	// (r.ok()): the proxy plays what moto lacks only for what moto did.
	After func(*call, *reply) *reply
}

// interceptor chooses the hooks of an operation; nil means plain
// pass-through.
type interceptor func(Op) *hooks

// call is one intercepted request.
type call struct {
	Op   Op
	Req  *http.Request
	Body []byte
	// Form is the parsed body of an EC2 query request. Hooks edit it; it
	// is re-encoded for moto only when edited (formEdited).
	Form       url.Values
	formEdited bool
	// Ctx outlives the client's connection: once the proxy forwarded a
	// call, moto and the side effects must finish even if the client
	// hung up, as AWS does.
	Ctx context.Context
	// stash carries what Before learned to After.
	stash map[string]any
	// resign: sign the forwarded request as the bed's administrator
	// (IAM enforcement decided it already).
	resign bool
}

func (c *call) param(name string) string { return c.Form.Get(name) }

// edit marks the form as changed so it is re-encoded for moto. The SigV4
// signature then no longer matches the body; moto does not check it.
func (c *call) edit() { c.formEdited = true }

// reply is a whole HTTP answer, buffered so it can be rewritten.
type reply struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r *reply) ok() bool { return r != nil && r.Status >= 200 && r.Status < 300 }

func (r *reply) write(w http.ResponseWriter) {
	for k, vs := range r.Header {
		switch http.CanonicalHeaderKey(k) {
		case "Content-Length", "Transfer-Encoding", "Connection", "Content-Encoding":
			continue // the body may have been rewritten or decoded
		}
		w.Header()[k] = vs
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(r.Body)))
	w.WriteHeader(r.Status)
	_, _ = w.Write(r.Body)
}

// xmlReply is a 200 EC2 query answer.
func xmlReply(doc *xnode) *reply {
	return &reply{Status: http.StatusOK, Header: http.Header{"Content-Type": {"text/xml;charset=UTF-8"}}, Body: doc.bytes()}
}

// ec2Error is an EC2 query error answer.
func ec2Error(status int, code, msg string) *reply {
	doc := elem("Response",
		elem("Errors", elem("Error", leaf("Code", code), leaf("Message", msg))),
		leaf("RequestID", fmt.Sprintf("testbed-%d", time.Now().UnixNano())))
	return &reply{Status: status, Header: http.Header{"Content-Type": {"text/xml"}}, Body: doc.bytes()}
}

// internalError reports a failure of the proxy's own work as EC2's 500, so
// the test sees it instead of a half-done call passing for a success.
func internalError(what string, err error) *reply {
	return ec2Error(http.StatusInternalServerError, "InternalError", "testbed proxy: "+what+": "+err.Error())
}

// errorReply turns an SDK error from the proxy's own call to moto into the
// answer AWS would have given the client (same code and status).
func errorReply(what string, err error) *reply {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		st := http.StatusBadRequest
		var he interface{ HTTPStatusCode() int }
		if errors.As(err, &he) && he.HTTPStatusCode() != 0 {
			st = he.HTTPStatusCode()
		}
		return ec2Error(st, ae.ErrorCode(), ae.ErrorMessage())
	}
	return internalError(what, err)
}

// serveIntercepted runs op's hooks around a buffered forward to upstream.
func (p *Proxy) serveIntercepted(r *http.Request, body []byte, op Op, h *hooks, resign bool) *reply {
	c := &call{Op: op, Req: r, Body: body, Ctx: context.WithoutCancel(r.Context()), stash: map[string]any{}, resign: resign}
	c.Form, _ = url.ParseQuery(string(body))
	if h.Answer != nil {
		if rep := h.Answer(c); rep != nil {
			return rep
		}
	}
	if h.Before != nil {
		if rep := h.Before(c); rep != nil {
			return rep
		}
	}
	rep, err := p.forward(c)
	if err != nil {
		return &reply{Status: http.StatusBadGateway, Header: http.Header{}, Body: []byte("proxy: " + err.Error())}
	}
	if h.After != nil {
		rep = h.After(c, rep)
	}
	return rep
}

// signedHeader reports whether the request's SigV4 signature covers the
// header.
func signedHeader(r *http.Request, name string) bool {
	_, rest, ok := strings.Cut(r.Header.Get("Authorization"), "SignedHeaders=")
	if !ok {
		return false
	}
	list, _, _ := strings.Cut(rest, ",")
	for _, h := range strings.Split(list, ";") {
		if strings.EqualFold(strings.TrimSpace(h), name) {
			return true
		}
	}
	return false
}

// withAfter returns hooks that run after too, after h's own After.
func withAfter(h *hooks, after func(*call, *reply) *reply) *hooks {
	out := &hooks{}
	if h != nil {
		*out = *h
	}
	if after != nil {
		prev := out.After
		out.After = func(c *call, r *reply) *reply {
			if prev != nil {
				r = prev(c, r)
			}
			return after(c, r)
		}
	}
	return out
}

// forward sends c to upstream and reads the whole answer.
func (p *Proxy) forward(c *call) (*reply, error) {
	body := c.Body
	if c.formEdited {
		body = []byte(c.Form.Encode())
	}
	u := *p.upstream
	u.Path = c.Req.URL.Path
	u.RawPath = c.Req.URL.RawPath
	u.RawQuery = c.Req.URL.RawQuery
	req, err := http.NewRequestWithContext(c.Ctx, c.Req.Method, u.String(), bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("build upstream request: %w", err)
	}
	for k, vs := range c.Req.Header {
		switch http.CanonicalHeaderKey(k) {
		case "Accept-Encoding":
			// Without it the transport negotiates and decodes gzip
			// itself, so the hooks always see plain XML; kept when the
			// client signed it (S3 signs "identity"), as moto checks
			// signatures when IAM is enforced.
			if c.resign || !signedHeader(c.Req, k) {
				continue
			}
		case "Content-Length", "Connection", "Keep-Alive", "Te", "Trailer", "Transfer-Encoding", "Upgrade":
			// Hop-by-hop, or recomputed.
			continue
		}
		req.Header[k] = vs
	}
	req.Host = c.Req.Host // SigV4 signed the original Host
	if c.resign {
		if err := p.resign(req, body); err != nil {
			return nil, fmt.Errorf("sign %s again as the bed's administrator: %w", c.Op, err)
		}
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w", c.Op, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("read upstream answer to %s: %w", c.Op, err)
	}
	return &reply{Status: resp.StatusCode, Header: resp.Header.Clone(), Body: b}, nil
}

// Query-protocol parameter helpers. EC2 flattens lists as Name.1, Name.2
// and structures as Name.1.Field.

// listParam returns the values of Name.1, Name.2, ... in order.
func listParam(f url.Values, name string) []string {
	var out []string
	for i := 1; ; i++ {
		v, ok := f[name+"."+strconv.Itoa(i)]
		if !ok {
			return out
		}
		out = append(out, v...)
	}
}

// structList returns the members of a list of structures, each as the
// values under its prefix with the prefix removed (Name.2.Tag.1.Key →
// "Tag.1.Key" in the second member). Members are in index order.
func structList(f url.Values, name string) []url.Values {
	byIndex := map[int]url.Values{}
	for k, vs := range f {
		rest, ok := strings.CutPrefix(k, name+".")
		if !ok {
			continue
		}
		idx, field, ok := strings.Cut(rest, ".")
		n, err := strconv.Atoi(idx)
		if !ok || err != nil {
			continue
		}
		if byIndex[n] == nil {
			byIndex[n] = url.Values{}
		}
		byIndex[n][field] = vs
	}
	idxs := make([]int, 0, len(byIndex))
	for n := range byIndex {
		idxs = append(idxs, n)
	}
	sort.Ints(idxs)
	out := make([]url.Values, 0, len(idxs))
	for _, n := range idxs {
		out = append(out, byIndex[n])
	}
	return out
}

// setStructList replaces the list called name with members, renumbered
// from 1 (EC2 rejects gaps in the numbering).
func setStructList(f url.Values, name string, members []url.Values) {
	for k := range f {
		if strings.HasPrefix(k, name+".") {
			delete(f, k)
		}
	}
	for i, m := range members {
		for field, vs := range m {
			f[name+"."+strconv.Itoa(i+1)+"."+field] = vs
		}
	}
}

// filterSpec is one Filter.N of a Describe call.
type filterSpec struct {
	Name   string
	Values []string
}

// takeFilters removes the filters whose name is in names from the call
// (moto would apply them to its own view, which the proxy rewrites) and
// returns them so After can apply them to the rewritten answer.
func takeFilters(c *call, names ...string) []filterSpec {
	var taken []filterSpec
	var kept []url.Values
	for _, m := range structList(c.Form, "Filter") {
		name := m.Get("Name")
		matched := false
		for _, n := range names {
			if name == n {
				matched = true
			}
		}
		if matched {
			taken = append(taken, filterSpec{Name: name, Values: listParam(m, "Value")})
			continue
		}
		kept = append(kept, m)
	}
	if len(taken) > 0 {
		setStructList(c.Form, "Filter", kept)
		c.edit()
	}
	return taken
}

// matchFilters is true when value passes every filter (EC2 semantics:
// filters AND together, values within one filter OR together).
func matchFilters(fs []filterSpec, value func(name string) string) bool {
	for _, f := range fs {
		v := value(f.Name)
		hit := false
		for _, want := range f.Values {
			if want == v {
				hit = true
			}
		}
		if !hit {
			return false
		}
	}
	return true
}

// tagSpecs are the TagSpecification.N members of a call, by resource type.
func tagSpecs(f url.Values) map[string][][2]string {
	out := map[string][][2]string{}
	for _, m := range structList(f, "TagSpecification") {
		rt := m.Get("ResourceType")
		for _, t := range structList(m, "Tag") {
			out[rt] = append(out[rt], [2]string{t.Get("Key"), t.Get("Value")})
		}
	}
	return out
}
