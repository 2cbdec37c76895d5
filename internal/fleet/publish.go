package fleet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"go.uber.org/zap"

	"github.com/rollback-agent/rollback-agent/internal/source/release"
)

// WriterAPI is what publishing needs of S3: s3:PutObject on the host's
// own document (the instance policy scopes it with ${aws:userid}) and
// s3:GetObject to read it back after a restart or a conflicting write.
type WriterAPI interface {
	GetObject(context.Context, *s3.GetObjectInput, ...func(*s3.Options)) (*s3.GetObjectOutput, error)
	PutObject(context.Context, *s3.PutObjectInput, ...func(*s3.Options)) (*s3.PutObjectOutput, error)
}

// PublisherOptions wire a Publisher.
type PublisherOptions struct {
	Layout release.Layout
	// Name returns the document's name (see Name); it is asked again
	// until it answers.
	Name func(context.Context) (string, error)
	S3   func(context.Context) (WriterAPI, error)
	// Build returns the host's state now; the publisher sets UpdatedAt.
	Build func(context.Context) *HostDoc
	// BeforeHeartbeat runs when a heartbeat is due, before Build: the
	// daemon's health round on an idle host.
	BeforeHeartbeat func(context.Context)
	Heartbeat       time.Duration
	// Retry is the wait after a failed write (default 30 s).
	Retry time.Duration
	// Now is the clock (tests); nil is time.Now.
	Now func() time.Time
	Log *zap.Logger
	// OnPass is told the outcome of each pass: wrote says a document was
	// written, err why it could not be (metrics, status, tests).
	OnPass func(wrote bool, err error)
}

// Publisher keeps this host's document current: written on every state
// change (Kick) when the state differs from what was last written, and
// at every heartbeat; never otherwise. Writes are conditional on the
// ETag last written (If-Match; If-None-Match: * for a new document), so
// a second writer of the same document (a clone of this host's state,
// a stale ETag) is noticed, logged, and written over once, not raced.
type Publisher struct {
	o    PublisherOptions
	kick chan struct{}

	// Only Run's goroutine touches these.
	key       string
	etag      string
	last      *HostDoc
	lastWrite time.Time
}

// NewPublisher checks the options.
func NewPublisher(o PublisherOptions) (*Publisher, error) {
	if o.Name == nil || o.S3 == nil || o.Build == nil || o.Heartbeat <= 0 || o.Layout.Bucket == "" {
		return nil, errors.New("fleet: publisher: name, S3, build, heartbeat and layout are all needed")
	}
	if o.Retry <= 0 {
		o.Retry = 30 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	return &Publisher{o: o, kick: make(chan struct{}, 1)}, nil
}

// Kick asks for a pass: the state may have changed. It never blocks; kicks
// that come while a pass runs make one more pass.
func (p *Publisher) Kick() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Run publishes until ctx ends.
func (p *Publisher) Run(ctx context.Context) {
	if !p.resolve(ctx) {
		return
	}
	client, err := p.o.S3(ctx)
	if err != nil {
		p.o.Log.Error("fleet: no S3 client; the host document is not published", zap.Error(err))
		return
	}
	if err := p.load(ctx, client); err != nil {
		p.o.Log.Warn("fleet: could not read this host's document back; the next write is unconditional on it", zap.String("key", p.key), zap.Error(err))
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	// After a failed write, kicks wait for the retry: a state change
	// during an S3 outage (or a missing grant) must not turn into a
	// write attempt per transition.
	var backoffUntil time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.kick:
			if p.o.Now().Before(backoffUntil) {
				continue
			}
		case <-timer.C:
		}
		wrote, err := p.pass(ctx, client)
		if p.o.OnPass != nil {
			p.o.OnPass(wrote, err)
		}
		wait := p.o.Heartbeat - p.o.Now().Sub(p.lastWrite)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			p.o.Log.Warn("fleet: writing this host's document failed; trying again", zap.String("key", p.key), zap.Duration("in", p.o.Retry), zap.Error(err))
			wait = p.o.Retry
			backoffUntil = p.o.Now().Add(p.o.Retry)
		} else {
			backoffUntil = time.Time{}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(max(wait, time.Second))
	}
}

// resolve finds the document's name, asking again after each failure.
func (p *Publisher) resolve(ctx context.Context) bool {
	for {
		name, err := p.o.Name(ctx)
		if err == nil {
			p.key = Key(p.o.Layout, name)
			p.o.Log.Info("fleet: publishing this host's document", zap.String("url", p.o.Layout.URL(p.key)))
			return true
		}
		p.o.Log.Warn("fleet: who am I? (sts:GetCallerIdentity); asking again", zap.Duration("in", p.o.Retry), zap.Error(err))
		if p.o.OnPass != nil {
			p.o.OnPass(false, err)
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(p.o.Retry):
		}
	}
}

// pass writes the document when the state changed or a heartbeat is due.
func (p *Publisher) pass(ctx context.Context, client WriterAPI) (bool, error) {
	due := p.o.Now().Sub(p.lastWrite) >= p.o.Heartbeat
	if due && p.o.BeforeHeartbeat != nil {
		p.o.BeforeHeartbeat(ctx)
	}
	doc := p.o.Build(ctx)
	if doc == nil {
		return false, nil
	}
	if !due && SameState(doc, p.last) {
		return false, nil
	}
	doc.UpdatedAt = p.o.Now().UTC()
	if err := p.put(ctx, client, doc); err != nil {
		return false, err
	}
	return true, nil
}

// put writes doc on the condition that the document is still the one this
// agent wrote; a failed condition is read back, logged, and written over
// once.
func (p *Publisher) put(ctx context.Context, client WriterAPI, doc *HostDoc) error {
	err := p.putOnce(ctx, client, doc)
	if !isPreconditionFailed(err) && !(isNotFound(err) && p.etag != "") {
		return err
	}
	theirs := p.last
	if lerr := p.load(ctx, client); lerr != nil {
		return fmt.Errorf("%w; reading it back: %w", err, lerr)
	}
	who := "it was deleted"
	if p.last != nil {
		who = fmt.Sprintf("written at %s by agent %s", p.last.UpdatedAt.Format(time.RFC3339), p.last.AgentVersion)
	}
	if theirs != nil || p.last != nil {
		p.o.Log.Warn("fleet: this host's document changed under the agent (another agent with this identity, or a copy of its state dir?); writing over it",
			zap.String("url", p.o.Layout.URL(p.key)), zap.String("found", who))
	}
	return p.putOnce(ctx, client, doc)
}

func (p *Publisher) putOnce(ctx context.Context, client WriterAPI, doc *HostDoc) error {
	body := doc.Encode()
	in := &s3.PutObjectInput{
		Bucket: aws.String(p.o.Layout.Bucket), Key: aws.String(p.key), Body: bytes.NewReader(body),
		ContentLength: aws.Int64(int64(len(body))), ContentType: aws.String("application/json"),
	}
	if p.etag != "" {
		in.IfMatch = aws.String(p.etag)
	} else {
		in.IfNoneMatch = aws.String("*")
	}
	out, err := client.PutObject(ctx, in, func(o *s3.Options) { o.RetryMaxAttempts = 1 })
	if err != nil {
		return fmt.Errorf("PUT %s: %w", p.o.Layout.URL(p.key), err)
	}
	p.etag, p.last, p.lastWrite = aws.ToString(out.ETag), doc, doc.UpdatedAt
	return nil
}

// load reads the document as S3 has it now: its ETag (the condition of
// the next write), its content, and when it was written.
func (p *Publisher) load(ctx context.Context, client WriterAPI) error {
	out, err := client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(p.o.Layout.Bucket), Key: aws.String(p.key)},
		func(o *s3.Options) { o.DisableLogOutputChecksumValidationSkipped = true })
	if isNotFound(err) {
		p.etag, p.last, p.lastWrite = "", nil, time.Time{}
		return nil
	}
	if err != nil {
		return fmt.Errorf("GET %s: %w", p.o.Layout.URL(p.key), err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(io.LimitReader(out.Body, MaxDocBytes+1))
	if err != nil {
		return fmt.Errorf("GET %s: read: %w", p.o.Layout.URL(p.key), err)
	}
	p.etag, p.last, p.lastWrite = aws.ToString(out.ETag), nil, time.Time{}
	if d, err := Parse(b); err == nil {
		p.last, p.lastWrite = d, d.UpdatedAt
	}
	return nil
}

func isPreconditionFailed(err error) bool {
	var re *smithyhttp.ResponseError
	return errors.As(err, &re) && re.HTTPStatusCode() == http.StatusPreconditionFailed
}

func isNotFound(err error) bool {
	var nsk *s3types.NoSuchKey
	var re *smithyhttp.ResponseError
	return errors.As(err, &nsk) || (errors.As(err, &re) && re.HTTPStatusCode() == http.StatusNotFound)
}
