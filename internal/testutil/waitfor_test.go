package testutil

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

type fakeT struct{ failed string }

func (f *fakeT) Helper() {}
func (f *fakeT) Fatalf(format string, args ...any) {
	f.failed = fmt.Sprintf(format, args...)
}

func TestWaitForReturnsWhenTrue(t *testing.T) {
	n := 0
	var ft fakeT
	WaitFor(&ft, time.Minute, "the third try", func() error {
		if n++; n < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if ft.failed != "" || n != 3 {
		t.Errorf("failed %q after %d tries", ft.failed, n)
	}
}

func TestWaitForFailsWithTheLastError(t *testing.T) {
	var ft fakeT
	n := 0
	WaitFor(&ft, 10*time.Millisecond, "never", func() error { n++; return fmt.Errorf("try %d", n) })
	if !strings.Contains(ft.failed, "waiting 10ms for never: try ") || !strings.HasSuffix(ft.failed, fmt.Sprint(n)) {
		t.Errorf("failure %q after %d tries", ft.failed, n)
	}
}

func TestStopEndsTheWaitAtOnce(t *testing.T) {
	var ft fakeT
	n := 0
	gone := errors.New("the process exited")
	WaitFor(&ft, time.Hour, "a dead process", func() error {
		if n++; n < 3 {
			return errors.New("not yet")
		}
		return Stop(gone)
	})
	if n != 3 || ft.failed != "waiting 1h0m0s for a dead process: the process exited" {
		t.Errorf("failure %q after %d tries", ft.failed, n)
	}
	if err := Poll(time.Hour, func() error { return Stop(fmt.Errorf("decode: %w", gone)) }); !errors.Is(err, gone) || err.Error() != "decode: the process exited" {
		t.Errorf("Poll returned %v", err)
	}
}
