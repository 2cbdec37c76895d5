package doctor

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// AWS's CodeDeploy agent on Linux, as its installer lays it out (the
// agent's conf/codedeployagent.yml; CodeDeploy User Guide, "Determine the
// version of the CodeDeploy agent": /opt/codedeploy-agent/.version).
const (
	cdAgentDir     = "opt/codedeploy-agent"
	cdVersionFile  = "opt/codedeploy-agent/.version"
	cdConfFile     = "etc/codedeploy-agent/conf/codedeployagent.yml"
	cdDefaultPIDs  = "/opt/codedeploy-agent/state/.pid/"
	cdProgramName  = "codedeploy-agent"
	cdCheckName    = "codedeploy-agent"
	cdInstallGuide = "install it (CodeDeploy User Guide, \"Install the CodeDeploy agent for Amazon Linux or RHEL\") and `systemctl enable --now codedeploy-agent`"
)

// codedeployAgent says whether AWS's CodeDeploy agent is installed and
// running: it runs the hooks `agentctl push --codedeploy-app` injects.
// Missing is a failure only on a host that has recorded CodeDeploy
// deployments; elsewhere it is not needed.
func (r *report) codedeployAgent() {
	root := r.in.Root
	if root == "" {
		root = "/"
	}
	proc := r.in.Proc
	if proc == "" {
		proc = "/proc"
	}
	missing := r.ok
	if r.in.UsesCodeDeploy {
		missing = func(name, detail string) {
			r.fail(name, detail+"; this host has recorded CodeDeploy deployments", cdInstallGuide)
		}
	}
	if _, err := os.Stat(filepath.Join(root, cdAgentDir)); errors.Is(err, fs.ErrNotExist) {
		missing(cdCheckName, "not installed (only hosts of a CodeDeploy deployment group need it)")
		return
	}
	version := "version unknown"
	if b, err := os.ReadFile(filepath.Join(root, cdVersionFile)); err == nil {
		v := strings.TrimSpace(string(b))
		if _, after, ok := strings.Cut(v, "agent_version:"); ok {
			v = strings.TrimSpace(after)
		}
		version = "version " + v
	}
	pid, err := cdAgentPID(root, proc)
	if err != nil {
		detail := fmt.Sprintf("installed (%s) but not running: %v", version, err)
		if r.in.UsesCodeDeploy {
			r.fail(cdCheckName, detail, "systemctl start codedeploy-agent, and read why it stopped: /var/log/aws/codedeploy-agent/codedeploy-agent.log")
		} else {
			r.warn(cdCheckName, detail, "systemctl start codedeploy-agent (if this host is in a CodeDeploy deployment group)")
		}
		return
	}
	r.ok(cdCheckName, fmt.Sprintf("installed (%s), running (pid %d)", version, pid))
}

// cdAgentPID is the pid of the running agent: its pid file (in the
// :pid_dir: of its config) names a live process whose command line is
// the agent's.
func cdAgentPID(root, proc string) (int, error) {
	dir := cdDefaultPIDs
	if f, err := os.Open(filepath.Join(root, cdConfFile)); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), ":pid_dir:"); ok {
				dir = strings.Trim(strings.TrimSpace(v), `'"`)
			}
		}
		f.Close()
	}
	pidFile := filepath.Join(root, dir, cdProgramName+".pid")
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return 0, fmt.Errorf("no pid file %s", filepath.Join("/", dir, cdProgramName+".pid"))
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pid file %s holds %q", pidFile, strings.TrimSpace(string(b)))
	}
	cmdline, err := os.ReadFile(filepath.Join(proc, strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return 0, fmt.Errorf("pid %d (from its pid file) is not running", pid)
	}
	if !strings.Contains(string(cmdline), cdProgramName) {
		return 0, fmt.Errorf("pid %d (from its pid file) is another program now: %q", pid, strings.ReplaceAll(string(cmdline), "\x00", " "))
	}
	return pid, nil
}
