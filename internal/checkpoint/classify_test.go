package checkpoint

import (
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

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
		{&net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer")}, true, time.Second},
		{errors.New("freeze /data (FIFREEZE): operation not supported"), false, time.Second},
	} {
		retry, wait := classify(c.err)
		if retry != c.retry || (retry && wait != c.wait) {
			t.Errorf("classify(%v) = %v, %s; want %v, %s", c.err, retry, wait, c.retry, c.wait)
		}
	}
}
