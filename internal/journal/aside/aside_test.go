package aside

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestMoveAsideRefusesAHeldJournalAndMovesAFreeOne(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	if err := os.WriteFile(path, []byte("damaged pages"), 0o600); err != nil {
		t.Fatal(err)
	}
	// An agent holds its journal with bbolt's flock.
	held, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(held.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if _, err := MoveAside(dir, time.Now()); !errors.Is(err, ErrHeld) {
		t.Fatalf("held journal: %v, want ErrHeld", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("a held journal was touched: %v", err)
	}
	held.Close()
	now := time.Date(2026, 12, 6, 2, 40, 0, 0, time.UTC)
	moved, err := MoveAside(dir, now)
	if err != nil {
		t.Fatal(err)
	}
	if want := path + ".damaged-20261206T024000Z"; moved != want {
		t.Errorf("moved to %s, want %s", moved, want)
	}
	if b, err := os.ReadFile(moved); err != nil || string(b) != "damaged pages" {
		t.Errorf("moved journal: %q %v", b, err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("journal.db still there: %v", err)
	}
	if _, err := MoveAside(dir, now); err == nil {
		t.Error("moving a journal that is not there succeeded")
	}
}
