package checkpoint

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/aws/smithy-go"
)

// Which create failures are retried, and after how long at least: the
// snapshot rate limits ask for 15 s (../shared/reference/ebs-ami.md).
func TestClassifyCreateFailures(t *testing.T) {
	api := func(code string) error {
		return fmt.Errorf("CreateSnapshots: %w", &smithy.GenericAPIError{Code: code, Message: "test"})
	}
	for _, c := range []struct {
		err   error
		retry bool
		wait  time.Duration
	}{
		{api("RequestLimitExceeded"), true, time.Second},
		{api("SnapshotCreationPerVolumeRateExceeded"), true, 15 * time.Second},
		{api("ConcurrentSnapshotLimitExceeded"), true, 15 * time.Second},
		{api("InternalError"), true, time.Second},
		{api("UnauthorizedOperation"), false, time.Second},
		{api("InvalidParameterValue"), false, time.Second},
		// The AMI name carries the checkpoint id: an earlier attempt made
		// it, not visible yet.
		{api("InvalidAMIName.Duplicate"), true, time.Second},
		{&net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer")}, true, time.Second},
		{errors.New("freeze /data (FIFREEZE): operation not supported"), false, time.Second},
	} {
		retry, wait := classify(c.err)
		if retry != c.retry || (retry && wait != c.wait) {
			t.Errorf("classify(%v) = %v, %s; want %v, %s", c.err, retry, wait, c.retry, c.wait)
		}
	}
}

// After which failures the request may have been carried out: those the
// agent looks for the resource after, for a while, before creating again.
func TestAmbiguousFailures(t *testing.T) {
	api := func(code string, fault smithy.ErrorFault) error {
		return fmt.Errorf("CreateSnapshots: %w", &smithy.GenericAPIError{Code: code, Message: "test", Fault: fault})
	}
	for _, c := range []struct {
		err  error
		want bool
	}{
		{api("InternalError", smithy.FaultServer), true},
		{api("RequestLimitExceeded", smithy.FaultServer), false},
		{api("ConcurrentSnapshotLimitExceeded", smithy.FaultClient), false},
		{api("InvalidAMIName.Duplicate", smithy.FaultClient), true},
		{api("InvalidParameterValue", smithy.FaultClient), false},
		{&net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer")}, true},
	} {
		if got := ambiguous(c.err); got != c.want {
			t.Errorf("ambiguous(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

// Tag values and descriptions are cut in characters, never inside one.
func TestTagValuesAndDescriptionsKeepEC2Limits(t *testing.T) {
	v := cleanTagValue(strings.Repeat("é", 300))
	if n := utf8.RuneCountInString(v); n != 256 || !utf8.ValidString(v) {
		t.Errorf("tag value of %d characters (valid UTF-8: %v), want 256", n, utf8.ValidString(v))
	}
	if v := cleanTagValue("short"); v != "short" {
		t.Errorf("a short value changed: %q", v)
	}
	d := Meta{ID: "cp-0123456789ab", Reason: "deploy", Revision: strings.Repeat("ü", 300)}.description("app")
	if n := utf8.RuneCountInString(d); n != 255 || !utf8.ValidString(d) || !strings.HasPrefix(d, "rollback-agent cp-0123456789ab of app: deploy ") {
		t.Errorf("description of %d characters: %q", n, d)
	}
}
