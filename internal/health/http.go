package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/config"
)

// maxBody is how much of a response body is read: enough for any health
// page, and a server streaming forever cannot make the agent read forever.
const maxBody = 64 << 10

// maxRedirects is how many redirects an http check follows.
const maxRedirects = 5

// excerptLen bounds the body excerpt quoted in a result.
const excerptLen = 200

type httpCheck struct {
	url string
	// shown is the URL as results show it (redactURL).
	shown    string
	expect   config.StatusRange
	contains string
	client   *http.Client
}

func newHTTPCheck(name string, c config.HTTPCheck) (Checker, error) {
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("http.url %q is not an http(s) URL", c.URL)
	}
	timeout := orDefault(c.Timeout, defaultHTTPTimeout)
	expect := c.ExpectStatus
	if expect == (config.StatusRange{}) {
		expect = config.StatusRange{Lo: 200, Hi: 299}
	}
	h := &httpCheck{url: c.URL, shown: redactURL(u), expect: expect, contains: c.BodyContains, client: newHTTPClient(timeout)}
	return &checker{name: name, kind: KindHTTP, what: "GET " + h.shown, timeout: timeout, probe: h.probe}, nil
}

// redactURL is u as results show it: with the password of its user info
// and every query value replaced by "xxxxx". A check URL may carry
// credentials (http://admin:pw@..., ?token=...), and results reach every
// member of the socket group, the journal and systemctl status.
func redactURL(u *url.URL) string {
	c := *u
	if c.RawQuery != "" {
		q := c.Query()
		for k := range q {
			q[k] = []string{"xxxxx"}
		}
		c.RawQuery = q.Encode()
	}
	return c.Redacted()
}

// newHTTPClient builds a client of its own for one check. The context
// deadline is the main bound; the client and dialer timeouts repeat it so
// that no phase can outlive it even if a context is lost on the way.
func newHTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			// The check probes the application itself: going through an
			// HTTP_PROXY of the host would measure the proxy instead.
			Proxy:       nil,
			DialContext: (&net.Dialer{Timeout: timeout}).DialContext,
			// No connection reuse: a server that hung once must not hold a
			// pooled connection that the next round then waits on, and every
			// round tests what a new client would see.
			DisableKeepAlives:     true,
			TLSHandshakeTimeout:   timeout,
			ResponseHeaderTimeout: timeout,
		},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) > maxRedirects {
				return fmt.Errorf("stopped after %d redirects", maxRedirects)
			}
			return nil
		},
	}
}

// probe GETs the URL. The status line is the output; the start of the
// body is the detail, for root only (a page behind basic auth is not for
// every local user).
func (h *httpCheck) probe(ctx context.Context) (bool, string, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.url, nil)
	if err != nil {
		return false, fmt.Sprintf("building the request for %s: %v", h.shown, err), ""
	}
	req.Header.Set("User-Agent", "rollback-agent-health-check")
	resp, err := h.client.Do(req)
	if err != nil {
		return false, describeHTTPError(h.shown, err), ""
	}
	defer resp.Body.Close()
	body, readErr := io.ReadAll(io.LimitReader(resp.Body, maxBody))

	status := fmt.Sprintf("HTTP %d from %s", resp.StatusCode, h.shown)
	excerpt := strings.TrimPrefix(bodyExcerpt(body), ": ")
	switch {
	case !h.expect.Contains(resp.StatusCode):
		return false, fmt.Sprintf("%s (want %s)", status, h.expect), excerpt
	case h.contains == "":
		return true, status, excerpt
	case readErr != nil && !strings.Contains(string(body), h.contains):
		return false, fmt.Sprintf("%s but reading the body failed before %q appeared: %v", status, h.contains, readErr), excerpt
	case !strings.Contains(string(body), h.contains):
		return false, fmt.Sprintf("%s but the body (first %d KiB) does not contain %q", status, maxBody>>10, h.contains), excerpt
	}
	return true, fmt.Sprintf("%s, body contains %q", status, h.contains), excerpt
}

// describeHTTPError turns a client error into a sentence that names the
// URL once (url.Error repeats it with the method).
func describeHTTPError(u string, err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" && oe.Err != nil {
		err = oe.Err // "dial tcp <addr>" repeats the URL's host
	}
	return fmt.Sprintf("GET %s: %v", u, err)
}

// bodyExcerpt is the start of the body on one line, for the result.
func bodyExcerpt(body []byte) string {
	s := strings.Join(strings.Fields(strings.ToValidUTF8(cutUTF8(string(body), excerptLen*2), "\uFFFD")), " ")
	if s == "" {
		return ""
	}
	if len(s) > excerptLen {
		s = cutUTF8(s, excerptLen) + "…"
	}
	return ": " + s
}
