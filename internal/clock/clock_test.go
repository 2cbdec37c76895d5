package clock

import (
	"context"
	"testing"
	"time"
)

// The fake clock moves only when told to, or at once by the length of a
// sleep in auto mode; the real one sleeps.
func TestFake(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f := NewFake(start, false)
	ch := f.After(time.Hour)
	select {
	case <-ch:
		t.Fatal("fired before the clock moved")
	default:
	}
	f.Advance(59 * time.Minute)
	select {
	case <-ch:
		t.Fatal("fired a minute early")
	default:
	}
	f.Advance(time.Minute)
	if got := <-ch; !got.Equal(start.Add(time.Hour)) {
		t.Errorf("fired at %s", got)
	}
	auto := NewFake(start, true)
	if err := Sleep(context.Background(), auto, 30*time.Minute); err != nil {
		t.Fatal(err)
	}
	if got := auto.Now(); !got.Equal(start.Add(30 * time.Minute)) {
		t.Errorf("auto clock at %s after a 30m sleep", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Sleep(ctx, f, time.Hour); err == nil {
		t.Error("Sleep on an ended context returned nil")
	}
	if Or(nil).Now().IsZero() {
		t.Error("Or(nil) is not the machine's clock")
	}
}
