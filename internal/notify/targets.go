package notify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	ebtypes "github.com/aws/aws-sdk-go-v2/service/eventbridge/types"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	snstypes "github.com/aws/aws-sdk-go-v2/service/sns/types"
)

// SNSAPI is the part of the SNS client a topic target uses.
type SNSAPI interface {
	Publish(context.Context, *sns.PublishInput, ...func(*sns.Options)) (*sns.PublishOutput, error)
}

// SNS publishes each event to a topic: the message is the event's JSON,
// the subject a one-line summary, and the message attribute "event" its
// type, for subscription filter policies.
type SNS struct {
	Client SNSAPI
	Topic  string
}

// Name implements Target.
func (SNS) Name() string { return "sns" }

// Send implements Target.
func (s SNS) Send(ctx context.Context, e Event, body []byte) error {
	in := &sns.PublishInput{
		TopicArn: aws.String(s.Topic), Message: aws.String(string(body)), Subject: aws.String(e.Subject()),
		MessageAttributes: map[string]snstypes.MessageAttributeValue{
			"event": {DataType: aws.String("String"), StringValue: aws.String(string(e.Event))},
		},
	}
	if strings.HasSuffix(s.Topic, ".fifo") {
		// FIFO topics need a group; one per instance keeps its events in
		// order (SNS API reference, Publish, MessageGroupId).
		in.MessageGroupId = aws.String(e.InstanceID)
		in.MessageDeduplicationId = aws.String(dedupID(e))
		in.Subject = nil
	}
	if _, err := s.Client.Publish(ctx, in, func(o *sns.Options) { o.RetryMaxAttempts = 1 }); err != nil {
		return fmt.Errorf("sns:Publish to %s: %w", s.Topic, err)
	}
	return nil
}

// EventBridgeAPI is the part of the EventBridge client a bus target uses.
type EventBridgeAPI interface {
	PutEvents(context.Context, *eventbridge.PutEventsInput, ...func(*eventbridge.Options)) (*eventbridge.PutEventsOutput, error)
}

// EventBridge puts each event on a bus: source "rollback-agent", the
// detail-type by what it is about, the instance as its resource, and the
// event's JSON as the detail.
type EventBridge struct {
	Client EventBridgeAPI
	Bus    string
}

// Name implements Target.
func (EventBridge) Name() string { return "eventbridge" }

// Send implements Target. PutEvents answers 200 with a failed entry when
// the bus refuses it (EventBridge API reference, PutEvents:
// FailedEntryCount): that is a failure too.
func (b EventBridge) Send(ctx context.Context, e Event, body []byte) error {
	entry := ebtypes.PutEventsRequestEntry{
		EventBusName: aws.String(b.Bus), Source: aws.String(Source), DetailType: aws.String(e.Event.DetailType()),
		Detail: aws.String(string(body)), Time: aws.Time(e.Time),
	}
	if arn := e.InstanceARN(); arn != "" {
		entry.Resources = []string{arn}
	}
	out, err := b.Client.PutEvents(ctx, &eventbridge.PutEventsInput{Entries: []ebtypes.PutEventsRequestEntry{entry}},
		func(o *eventbridge.Options) { o.RetryMaxAttempts = 1 })
	if err != nil {
		return fmt.Errorf("events:PutEvents on bus %s: %w", b.Bus, err)
	}
	if out.FailedEntryCount > 0 {
		why := "no reason given"
		if len(out.Entries) > 0 && out.Entries[0].ErrorCode != nil {
			why = aws.ToString(out.Entries[0].ErrorCode) + ": " + aws.ToString(out.Entries[0].ErrorMessage)
		}
		return fmt.Errorf("events:PutEvents on bus %s: the entry was refused: %s", b.Bus, why)
	}
	return nil
}

// Command runs a local program for each event, without a shell, with the
// event's JSON on stdin; it fails on a non-zero exit or after Timeout
// (SIGKILL to its process group).
type Command struct {
	Argv    []string
	Timeout time.Duration
}

// Name implements Target.
func (Command) Name() string { return "command" }

// Send implements Target.
func (c Command) Send(ctx context.Context, e Event, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.Argv[0], c.Argv[1:]...)
	cmd.Stdin = bytes.NewReader(append(body, '\n'))
	var out tail
	cmd.Stdout, cmd.Stderr = &out, &out
	// Its own process group, killed whole: a notifier that forks must not
	// outlive its timeout.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	cmd.Env = append(cmd.Environ(), "ROLLBACK_AGENT_EVENT="+string(e.Event), "ROLLBACK_AGENT_DEPLOYMENT_ID="+e.DeploymentID)
	err := cmd.Run()
	switch {
	case ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("notify.command %s: killed after %s: %s", c.Argv[0], c.Timeout, out.String())
	case err != nil:
		return fmt.Errorf("notify.command %s: %w: %s", c.Argv[0], err, out.String())
	}
	return nil
}

// tail keeps the last 1 KiB written to it.
type tail struct{ b []byte }

func (t *tail) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 1024 {
		t.b = t.b[len(t.b)-1024:]
	}
	return len(p), nil
}

func (t *tail) String() string { return strings.TrimSpace(string(t.b)) }

func dedupID(e Event) string {
	return fmt.Sprintf("%s-%s-%s-%d", e.InstanceID, e.DeploymentID, e.Event, e.Time.UnixNano())
}
