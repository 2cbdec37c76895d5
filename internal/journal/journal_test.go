package journal

import (
	"errors"
	"strings"
	"testing"
)

func TestExclusiveLockNamesHolder(t *testing.T) {
	dir := t.TempDir()
	j, err := Open(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := j.SetMeta("boot_id", "abc"); err != nil {
		t.Fatal(err)
	}
	_, err = Open(dir, 0)
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "held by rollback-agent pid") {
		t.Fatalf("second open: %v", err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j2, err := Open(dir, 0)
	if err != nil {
		t.Fatalf("reopen after close: %v", err)
	}
	defer j2.Close()
	if v, _ := j2.GetMeta("boot_id"); v != "abc" {
		t.Errorf("meta lost: %q", v)
	}
}
