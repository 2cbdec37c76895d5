package doctor

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rollback-agent/rollback-agent/internal/api"
)

// cdCheck runs the CodeDeploy agent check against root.
func cdCheck(root string, uses bool) api.DoctorCheck {
	r := &report{in: Inputs{Root: root, Proc: "/proc", UsesCodeDeploy: uses}}
	r.codedeployAgent()
	return r.checks[0]
}

// Not installed, installed and stopped, installed and running (its pid
// file names a live process whose command line is the agent's, as the
// agent's master process titles itself): each said, and a failure only
// on a host that recorded CodeDeploy deployments.
func TestCodeDeployAgentCheck(t *testing.T) {
	root := t.TempDir()
	if c := cdCheck(root, false); c.Result != api.DoctorOK || !strings.Contains(c.Detail, "not installed") {
		t.Errorf("not installed, unused: %+v", c)
	}
	if c := cdCheck(root, true); c.Result != api.DoctorFail || c.Fix == "" {
		t.Errorf("not installed, used: %+v", c)
	}
	os.MkdirAll(filepath.Join(root, "opt/codedeploy-agent/state/.pid"), 0o755)
	os.WriteFile(filepath.Join(root, "opt/codedeploy-agent/.version"), []byte("agent_version: OFFICIAL_1.7.1-110_rpm\n"), 0o644)
	if c := cdCheck(root, false); c.Result != api.DoctorWarn || !strings.Contains(c.Detail, "OFFICIAL_1.7.1-110_rpm") || !strings.Contains(c.Detail, "not running: no pid file") {
		t.Errorf("installed, stopped: %+v", c)
	}
	if c := cdCheck(root, true); c.Result != api.DoctorFail {
		t.Errorf("installed, stopped, used: %+v", c)
	}
	cmd := exec.Command("bash", "-c", `exec -a "codedeploy-agent: master 1" sleep 300`)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	pidFile := filepath.Join(root, "opt/codedeploy-agent/state/.pid/codedeploy-agent.pid")
	os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644)
	if c := cdCheck(root, true); c.Result != api.DoctorOK || !strings.Contains(c.Detail, "running (pid "+strconv.Itoa(cmd.Process.Pid)+")") {
		t.Errorf("running: %+v", c)
	}
	// A pid file left behind, whose pid is now another program.
	os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())), 0o644)
	if c := cdCheck(root, false); c.Result != api.DoctorWarn || !strings.Contains(c.Detail, "is another program now") {
		t.Errorf("stale pid file: %+v", c)
	}
	// The pid directory the agent's config names.
	os.MkdirAll(filepath.Join(root, "etc/codedeploy-agent/conf"), 0o755)
	os.MkdirAll(filepath.Join(root, "run/cd"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/codedeploy-agent/conf/codedeployagent.yml"), []byte("---\n:pid_dir: '/run/cd/'\n:program_name: codedeploy-agent\n"), 0o644)
	os.WriteFile(filepath.Join(root, "run/cd/codedeploy-agent.pid"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644)
	if c := cdCheck(root, false); c.Result != api.DoctorOK {
		t.Errorf("pid_dir from the config: %+v", c)
	}
}
