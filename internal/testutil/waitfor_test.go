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
