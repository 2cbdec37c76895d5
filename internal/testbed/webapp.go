package testbed

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	bundlerev "github.com/rollback-agent/rollback-agent/internal/testbed/revision"
)

// WebApp is a small web service used by tests and the demo: python's
// http.server serving version.txt from its install directory. Its
// ApplicationStart starts the server in the background WITHOUT
// redirecting its output (the hook must not hang on it), ApplicationStop
// stops it, ValidateService checks it serves the expected version.
type WebApp struct {
	Dir  string // install directory
	Run  string // where the pid file lives
	Port int
}

// Revision returns version of the app. validate replaces the
// ValidateService check when not empty.
func (w WebApp) Revision(version, validate string) bundlerev.Revision {
	if validate == "" {
		validate = fmt.Sprintf("curl -fsS http://127.0.0.1:%d/version.txt | grep -qx %s", w.Port, version)
	}
	return bundlerev.Revision{
		Dest:  w.Dir,
		Files: map[string]bundlerev.File{"version.txt": {Content: version + "\n"}, "static/logo.txt": {Content: "logo"}},
		Hooks: map[string]string{
			"ApplicationStop": fmt.Sprintf("if [ -f %[1]s/web.pid ]; then kill $(cat %[1]s/web.pid) 2>/dev/null || true; rm -f %[1]s/web.pid; fi", w.Run),
			"ApplicationStart": fmt.Sprintf("mkdir -p %[3]s\npython3 -m http.server %[1]d --bind 127.0.0.1 --directory %[2]s &\necho $! > %[3]s/web.pid\n"+
				"for i in $(seq 1 50); do curl -fsS -o /dev/null http://127.0.0.1:%[1]d/ && exit 0; sleep 0.1; done; exit 1",
				w.Port, w.Dir, w.Run),
			"ValidateService": validate,
		},
	}
}

// URL is the app's version URL.
func (w WebApp) URL() string { return fmt.Sprintf("http://127.0.0.1:%d/version.txt", w.Port) }

// Stop kills a server left running.
func (w WebApp) Stop() {
	b, err := os.ReadFile(filepath.Join(w.Run, "web.pid"))
	if err != nil {
		return
	}
	var pid int
	fmt.Sscanf(string(b), "%d", &pid)
	if pid > 0 {
		syscall.Kill(pid, syscall.SIGTERM)
	}
}

// FreePort returns a free loopback TCP port.
func FreePort() (int, error) { return freePort() }
