package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/rollback-agent/rollback-agent/internal/awsconf"
	"github.com/rollback-agent/rollback-agent/internal/source"
	"github.com/rollback-agent/rollback-agent/internal/source/release"
)

// B7's fleet: agents polling one channel at the agents' default interval
// for a simulated span, the channel moving once halfway.
const (
	b7Agents   = 1000
	b7Interval = 30 * time.Second
	b7Span     = 5 * time.Minute
	// S3 request prices, us-east-1, S3 Standard (https://aws.amazon.com/s3/pricing/,
	// "Requests & data retrievals"): GET $0.0004 and PUT $0.005 per 1,000.
	s3GetPer1000 = 0.0004
	s3PutPer1000 = 0.005
)

// wire counts what crossed the wire: responses by status and the bytes
// of their bodies as the client read them.
type wire struct {
	next   http.RoundTripper
	mu     sync.Mutex
	status map[int]int
	bodies atomic.Int64
}

func (w *wire) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := w.next.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	w.status[resp.StatusCode]++
	w.mu.Unlock()
	resp.Body = &countedBody{ReadCloser: resp.Body, n: &w.bodies}
	return resp, nil
}

func (w *wire) reset() {
	w.mu.Lock()
	w.status = map[int]int{}
	w.mu.Unlock()
	w.bodies.Store(0)
}

func (w *wire) count(code int) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.status[code]
}

type countedBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c *countedBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// poll is one simulated agent's poll at a simulated time.
type poll struct {
	agent int
	at    time.Duration
}

// schedule is every poll of the span in simulated-time order: agent i
// polls at its phase (spread over the interval, as the agents' jitter
// spreads them) and every interval after.
func schedule() []poll {
	var ps []poll
	for i := range b7Agents {
		phase := time.Duration(i) * b7Interval / b7Agents
		for at := phase; at < b7Span; at += b7Interval {
			ps = append(ps, poll{agent: i, at: at})
		}
	}
	sort.SliceStable(ps, func(a, b int) bool { return ps[a].at < ps[b].at })
	return ps
}

// b7 runs the span's polls through the agent's own request
// (source.ChannelPoll) against the bed's S3 through its proxy, the
// channel moving once at half time; simulated time, so the span takes
// what the bed needs to answer, not five minutes. The baseline is the
// same schedule with unconditional GETs.
func (b *bench) b7(ctx context.Context) (row, error) {
	r := row{id: "B7", what: fmt.Sprintf("%d simulated agents polling one channel every %s for %s (simulated time; the channel moves once, at half time) against the bed's S3 through its proxy",
		b7Agents, b7Interval, b7Span),
		bar: "one request per host per poll; a body only to a host whose channel moved (one per host per move), 304 with no body otherwise"}
	w := &wire{next: http.DefaultTransport, status: map[int]int{}}
	cfg := b.bed.AWSConfig()
	cfg.BaseEndpoint = aws.String(b.bed.AWS.URL)
	cfg.HTTPClient = &http.Client{Transport: w}
	client := awsconf.S3(cfg)
	bucket := fmt.Sprintf("fleet-%d", time.Now().UnixNano())
	if _, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		return r, fmt.Errorf("create bucket %s: %w", bucket, err)
	}
	layout := release.NewLayout(bucket, "releases", "bench")
	key := layout.ChannelKey("prod")
	move := func(seq int64, version string) (int, error) {
		doc := &release.ChannelDoc{SchemaVersion: release.ChannelSchema, App: "bench", Channel: "prod", Sequence: seq, Version: version,
			Manifest: release.ManifestRel(version), ManifestSHA256: fmt.Sprintf("%064x", seq), UpdatedAt: time.Unix(1764000000+seq, 0).UTC(), UpdatedBy: "bench"}
		body := doc.Encode()
		_, err := client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader(body)})
		return len(body), err
	}
	docSize, err := move(1, "1.0.0")
	if err != nil {
		return r, err
	}
	polls := schedule()
	type result struct {
		requests, s3calls, bodies, notModified int
		bytes                                  int64
		wall                                   time.Duration
	}
	runOnce := func(conditional bool, seq int64) (result, error) {
		// Warm-up, not counted: every agent has polled once before the
		// span, so it starts with the channel's ETag, as a running agent
		// does.
		etags := make([]string, b7Agents)
		for i := range etags {
			_, tag, _, err := source.ChannelPoll(ctx, client, bucket, key, "")
			if err != nil {
				return result{}, err
			}
			etags[i] = tag
		}
		w.reset()
		b.bed.AWS.ResetCounts()
		var res result
		var bodies atomic.Int64
		start := time.Now()
		// One simulated interval at a time: in each, every agent polls
		// once (so no agent's polls overlap), in parallel, in any order.
		// The channel moves between two intervals, at half time.
		for from := time.Duration(0); from < b7Span; from += b7Interval {
			if from == b7Span/2 {
				// The operator's promote: not a poll, not counted as one.
				if _, err := move(seq, fmt.Sprintf("1.0.%d", seq)); err != nil {
					return res, err
				}
			}
			var wg sync.WaitGroup
			var mu sync.Mutex
			var firstErr error
			next := make(chan poll)
			for range 8 {
				wg.Go(func() {
					for p := range next {
						tag := etags[p.agent]
						if !conditional {
							tag = ""
						}
						body, newTag, changed, err := source.ChannelPoll(ctx, client, bucket, key, tag)
						if err == nil && changed && len(body) == 0 {
							err = fmt.Errorf("a changed channel came back without a body")
						}
						if err != nil {
							mu.Lock()
							firstErr = err
							mu.Unlock()
							continue
						}
						if changed {
							bodies.Add(1)
						}
						etags[p.agent] = newTag
					}
				})
			}
			for _, p := range polls {
				if p.at >= from && p.at < from+b7Interval {
					next <- p
				}
			}
			close(next)
			wg.Wait()
			if firstErr != nil {
				return res, firstErr
			}
		}
		res.wall = time.Since(start)
		for _, c := range b.bed.AWS.Calls() {
			if c.Op.Service == "s3" && c.Op.Action == "GET object" {
				res.s3calls++
			}
		}
		res.requests = w.count(http.StatusOK) + w.count(http.StatusNotModified)
		res.bodies = int(bodies.Load())
		res.notModified = w.count(http.StatusNotModified)
		res.bytes = w.bodies.Load()
		// The promote's PUT answered 200 with no body: not a poll.
		res.requests--
		return res, nil
	}
	base, err := runOnce(false, 2)
	if err != nil {
		return r, fmt.Errorf("baseline (unconditional GETs): %w", err)
	}
	got, err := runOnce(true, 3)
	if err != nil {
		return r, err
	}
	span := b7Span.Seconds()
	perHostMonth := float64(got.s3calls) / b7Agents * (30 * 24 * time.Hour).Seconds() / span
	getCost := perHostMonth * 1000 / 1000 * s3GetPer1000
	r.baseline = fmt.Sprintf("unconditional GETs, same schedule: %d requests, %d bodies, %s of bodies (%d B each)", base.s3calls, base.bodies, kib(base.bytes), docSize)
	r.measured = fmt.Sprintf("%d GETs counted by the proxy (%.1f/s of simulated time, %.1f per host per poll; the bed answered them in %s of wall time, %.0f/s); "+
		"%d answered 304 with 0 bytes of body, %d with the moved channel (%d per host); %s of bodies, %.1f %% of the baseline's. "+
		"Per 1,000 hosts a month: %.1f M GETs, $%.2f at $%.4f per 1,000 GETs",
		got.s3calls, float64(got.s3calls)/span, float64(got.s3calls)/float64(len(polls)), round(got.wall), float64(got.s3calls)/got.wall.Seconds(),
		got.notModified, got.bodies, got.bodies/b7Agents, kib(got.bytes), 100*float64(got.bytes)/float64(base.bytes),
		perHostMonth*1000/1e6, getCost, s3GetPer1000)
	ok := got.s3calls == len(polls) && got.requests == len(polls) && got.bodies == b7Agents && got.notModified == len(polls)-b7Agents &&
		got.bytes == int64(b7Agents*docSize)
	r.verdict = verdict(ok, fmt.Sprintf("%d requests for %d polls, %d bodies (%d B), %d not modified", got.s3calls, len(polls), got.bodies, got.bytes, got.notModified))
	return r, nil
}

func kib(n int64) string { return fmt.Sprintf("%.1f KiB", float64(n)/1024) }
