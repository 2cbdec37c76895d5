package daemon

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// Logs are JSON when stderr is not a terminal (journald, a file, a
// pipe), and the console format when it is one.
func TestLogFormatFollowsTheTerminal(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	log, _ := newLogger(f, "info")
	log.Info("ready", zap.String("instance", "i-0abc"))
	log.Sync()
	b, _ := os.ReadFile(f.Name())
	var line map[string]any
	if err := json.Unmarshal(bytes.TrimSpace(b), &line); err != nil {
		t.Fatalf("a file gets %q, not JSON: %v", b, err)
	}
	if line["msg"] != "ready" || line["level"] != "info" || line["instance"] != "i-0abc" || line["time"] == nil {
		t.Errorf("JSON line %v", line)
	}

	master, slave := openPTY(t)
	defer master.Close()
	defer slave.Close()
	log, _ = newLogger(slave, "info")
	log.Info("ready")
	buf := make([]byte, 4096)
	n, err := master.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	out := string(buf[:n])
	if strings.HasPrefix(out, "{") || !strings.Contains(out, "INFO") || !strings.Contains(out, "ready") {
		t.Errorf("a terminal gets %q, want the console format", out)
	}
}

// openPTY opens a real pseudo-terminal pair.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open /dev/ptmx: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open the pty's slave: %v", err)
	}
	return m, s
}
