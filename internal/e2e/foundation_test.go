package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/testbed"
	"github.com/rollback-agent/rollback-agent/internal/version"
)

// The agent reports exactly the identity and volumes moto holds, as seen
// by an independent client (awscli).
func TestStatusReportsIdentityFromIMDSAndEC2(t *testing.T) {
	h := newHost(t, "")
	h.start()

	r := h.ctl("status", "-o", "json")
	if r.code != 0 {
		t.Fatalf("agentctl status exit %d: %s", r.code, r.stderr)
	}
	var st api.Status
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("decode status: %v\n%s", err, r.stdout)
	}
	if st.SchemaVersion != api.SchemaVersion {
		t.Errorf("schema_version = %d", st.SchemaVersion)
	}

	var desc struct {
		Reservations []struct {
			OwnerId   string
			Instances []struct {
				InstanceId          string
				InstanceType        string
				RootDeviceName      string
				Placement           struct{ AvailabilityZone string }
				BlockDeviceMappings []struct {
					DeviceName string
					Ebs        struct{ VolumeId string }
				}
			}
		}
	}
	awscli(t, h.bed, &desc, "ec2", "describe-instances", "--instance-ids", h.inst.Doc.InstanceID)
	if len(desc.Reservations) != 1 || len(desc.Reservations[0].Instances) != 1 {
		t.Fatalf("awscli sees %+v", desc)
	}
	want := desc.Reservations[0].Instances[0]
	id := st.Identity
	checks := [][3]string{
		{"instance_id", id.InstanceID, want.InstanceId},
		{"region", id.Region, testbed.Region},
		{"availability_zone", id.AvailabilityZone, want.Placement.AvailabilityZone},
		{"account_id", id.AccountID, desc.Reservations[0].OwnerId},
		{"instance_type", id.InstanceType, want.InstanceType},
		{"root_device_name", id.RootDeviceName, want.RootDeviceName},
		{"source", id.Source, "imds"},
	}
	for _, c := range checks {
		if c[1] != c[2] || c[1] == "" {
			t.Errorf("%s = %q, awscli says %q", c[0], c[1], c[2])
		}
	}
	var got, exp []string
	for _, v := range id.Volumes {
		got = append(got, v.VolumeID+"@"+v.DeviceName+fmt.Sprintf(" root=%v", v.Root))
	}
	for _, m := range want.BlockDeviceMappings {
		exp = append(exp, m.Ebs.VolumeId+"@"+m.DeviceName+fmt.Sprintf(" root=%v", m.DeviceName == want.RootDeviceName))
	}
	sort.Strings(got)
	sort.Strings(exp)
	if len(exp) != 2 || !slices.Equal(got, exp) {
		t.Errorf("volumes = %v, awscli says %v", got, exp)
	}
	var vols struct {
		Volumes []struct {
			VolumeId   string
			Size       int32
			VolumeType string
		}
	}
	awscli(t, h.bed, &vols, "ec2", "describe-volumes", "--volume-ids", h.inst.RootVolumeID, h.inst.DataVolumeID)
	for _, v := range vols.Volumes {
		for _, g := range id.Volumes {
			if g.VolumeID == v.VolumeId && (g.SizeGiB != v.Size || g.VolumeType != v.VolumeType) {
				t.Errorf("volume %s: size/type %d/%s, awscli says %d/%s", v.VolumeId, g.SizeGiB, g.VolumeType, v.Size, v.VolumeType)
			}
		}
	}
	if st.State != api.StateIdle || !strings.Contains(st.Summary, want.InstanceId) {
		t.Errorf("state %q summary %q", st.State, st.Summary)
	}

	// The table form: a summary line first, then the facts.
	r = h.ctl("status")
	if r.code != 0 {
		t.Fatalf("agentctl status exit %d: %s", r.code, r.stderr)
	}
	first := strings.SplitN(r.stdout, "\n", 2)[0]
	if !strings.Contains(first, want.InstanceId) {
		t.Errorf("first line %q does not summarise the instance", first)
	}
	for _, s := range []string{h.inst.RootVolumeID, h.inst.DataVolumeID, want.Placement.AvailabilityZone, desc.Reservations[0].OwnerId} {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("status table lacks %s:\n%s", s, r.stdout)
		}
	}

	// version answers for both sides.
	r = h.ctl("version", "-o", "json")
	var v struct {
		Agentctl version.Info  `json:"agentctl"`
		Agent    *version.Info `json:"agent"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || v.Agent == nil || v.Agentctl.GoVersion == "" {
		t.Errorf("agentctl version -o json: %v %s %s", err, r.stdout, r.stderr)
	}
}

func TestIMDSForbiddenIsAClearStartupError(t *testing.T) {
	h := newHost(t, "")
	// IMDS turned off (HttpEndpoint=disabled) answers 403 to everything.
	h.inst.IMDSProxy.AddFault(testbed.Fault{Service: "imds", Kind: testbed.FaultForbidden})
	code, out := h.runAgentToExit(h.env)
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, out)
	}
	for _, s := range []string{"403", "IMDS is turned off", "instance_id and region"} {
		if !strings.Contains(out, s) {
			t.Errorf("startup error lacks %q:\n%s", s, out)
		}
	}
	// No silent fallback: no unauthenticated (IMDSv1) GET was tried after
	// the token was refused.
	for op, n := range h.inst.IMDSProxy.Counts() {
		if strings.HasPrefix(op, "imds:GET") && n > 0 {
			t.Errorf("agent fell back to IMDSv1: %s x%d", op, n)
		}
	}
	if _, err := os.Stat(h.socket); err == nil {
		t.Errorf("socket %s left behind after a failed start", h.socket)
	}
}

func TestIMDSUnreachableIsAClearStartupError(t *testing.T) {
	h := newHost(t, "")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	env := append(append([]string{}, h.env...), "AWS_EC2_METADATA_SERVICE_ENDPOINT=http://"+addr)
	code, out := h.runAgentToExit(env)
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, out)
	}
	for _, s := range []string{"cannot reach IMDS", addr, "instance_id and region"} {
		if !strings.Contains(out, s) {
			t.Errorf("startup error lacks %q:\n%s", s, out)
		}
	}
}

func TestInstanceUnknownToEC2(t *testing.T) {
	h := newHost(t, "instance_id: i-0123456789abcdef0\nregion: us-east-1\n")
	code, out := h.runAgentToExit(h.env)
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, out)
	}
	for _, s := range []string{"DescribeInstances", "i-0123456789abcdef0", "not known to EC2"} {
		if !strings.Contains(out, s) {
			t.Errorf("startup error lacks %q:\n%s", s, out)
		}
	}
}

// On-prem: no IMDS at all, identity from the config, the rest from EC2.
func TestOnPremIdentityFromConfig(t *testing.T) {
	h := newHost(t, "")
	h.writeConfig(fmt.Sprintf("instance_id: %s\nregion: %s\n", h.inst.Doc.InstanceID, testbed.Region))
	h.inst.IMDSProxy.AddFault(testbed.Fault{Service: "imds", Kind: testbed.FaultForbidden})
	h.start()
	var st api.Status
	r := h.ctl("status", "-o", "json")
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatal(err, r.stderr)
	}
	if st.Identity.Source != "config" || st.Identity.AvailabilityZone != h.inst.Doc.AvailabilityZone ||
		st.Identity.AccountID != h.inst.Doc.AccountID || len(st.Identity.Volumes) != 2 {
		t.Errorf("on-prem identity: %+v", st.Identity)
	}
	if n := len(h.inst.IMDSProxy.Counts()); n != 0 {
		t.Errorf("on-prem agent talked to IMDS: %v", h.inst.IMDSProxy.Counts())
	}
}

func TestBadConfigListsEveryProblemAndExits78(t *testing.T) {
	h := newHost(t, "")
	bad := fmt.Sprintf(`application: demo
state_dir: relative/state
socket: %s
sockt_group: wheel
sources:
  poll_interval: soon
health:
  checks:
    - {name: web, http: {url: "not a url"}}
rollback: {ladder: [root, revision]}
`, h.socket)
	if err := os.WriteFile(h.config, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out := h.runAgentToExit(h.env)
	if code != 78 {
		t.Fatalf("exit %d, want 78 (EX_CONFIG)\n%s", code, out)
	}
	want := []string{
		h.config + ":2:12: state_dir",
		h.config + `:4:1: unknown key "sockt_group"`,
		h.config + ":6:18: sources.poll_interval",
		h.config + ":9:31: health.checks[0].http.url",
		h.config + ":10:27: rollback.ladder[1]",
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
	if _, err := os.Stat(h.stateDir); err == nil {
		t.Errorf("a bad config still created the state dir")
	}
}

func TestSecondDaemonOnSameStateDirIsRefused(t *testing.T) {
	h := newHost(t, "")
	h.start()
	// Same state dir, different socket: the journal lock must refuse it.
	second := *h
	second.socket = filepath.Join(h.dir, "run2", "agent.sock")
	second.config = filepath.Join(h.dir, "agent2.yaml")
	second.writeConfig("")
	code, out := second.runAgentToExit(h.env)
	if code == 0 {
		t.Fatalf("second daemon exit 0\n%s", out)
	}
	if !strings.Contains(out, fmt.Sprintf("held by rollback-agent pid %d", h.agent.PID())) || !strings.Contains(out, "only one agent") {
		t.Errorf("refusal does not name the holder:\n%s", out)
	}
	// The first one is unharmed.
	if r := h.ctl("status", "-o", "json"); r.code != 0 {
		t.Errorf("first agent stopped answering: %d %s", r.code, r.stderr)
	}
}

func TestStaleSocketIsReplacedLiveOneIsNot(t *testing.T) {
	h := newHost(t, "")
	if err := os.MkdirAll(filepath.Dir(h.socket), 0o750); err != nil {
		t.Fatal(err)
	}
	// A socket file nobody listens on, as a SIGKILLed agent leaves it.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: h.socket, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	h.start()
	h.agent.Stop()

	// Now something answers on the socket: the agent must not steal it.
	live, err := net.Listen("unix", h.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	code, out := h.runAgentToExit(h.env)
	if code == 0 || !strings.Contains(out, "another agent is answering on "+h.socket) {
		t.Fatalf("exit %d, output:\n%s", code, out)
	}
}

func TestAgentctlWithoutDaemonExits3WithHint(t *testing.T) {
	h := newHost(t, "")
	r := h.ctl("status")
	if r.code != 3 || !strings.Contains(r.stderr, "not running") || !strings.Contains(r.stderr, "systemctl status rollback-agent") {
		t.Errorf("exit %d stderr %q", r.code, r.stderr)
	}
	if r := h.ctl("frobnicate"); r.code != 2 {
		t.Errorf("unknown command: exit %d, want 2 (%s)", r.code, r.stderr)
	}
	if r := h.ctl("status", "--bogus"); r.code != 2 {
		t.Errorf("unknown flag: exit %d, want 2 (%s)", r.code, r.stderr)
	}
}

// Peer credentials: root may do everything, the socket group may read,
// others are refused; browsers are refused whoever they are.
func TestSocketAuthorizationByPeerCredentials(t *testing.T) {
	h := newHost(t, "")
	h.start()
	fi, err := os.Stat(h.socket)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Perm() != 0o660 || st.Gid != testGID {
		t.Errorf("socket mode %v gid %d, want 0660 gid %d", fi.Mode().Perm(), st.Gid, testGID)
	}
	di, _ := os.Stat(filepath.Dir(h.socket))
	if di.Mode().Perm() != 0o750 || di.Sys().(*syscall.Stat_t).Gid != testGID {
		t.Errorf("socket dir mode %v, want 0750 group %d", di.Mode().Perm(), testGID)
	}

	member := &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{testGID}}
	stranger := &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}

	if r := h.ctlAs(member, "status", "-o", "json"); r.code != 0 || !strings.Contains(r.stdout, h.inst.Doc.InstanceID) {
		t.Errorf("group member status: exit %d %s", r.code, r.stderr)
	}
	if r := h.ctlAs(stranger, "status"); r.code != 4 || !strings.Contains(r.stderr, "denied") {
		t.Errorf("stranger status: exit %d, want 4; %s", r.code, r.stderr)
	}

	// A mutating request from the group member is refused by SO_PEERCRED.
	code, body := curlAs(t, member, h.socket, "-X", "POST", "-d", "{}", "http://agent"+api.PathDeployments)
	if code != 403 || !strings.Contains(body, `"code": "denied"`) || !strings.Contains(body, "may only read") {
		t.Errorf("member POST: %d %s", code, body)
	}
	// Root gets past authorization (the path answers whatever it answers,
	// but not 403).
	code, body = curlAs(t, nil, h.socket, "-X", "POST", "-d", "{}", "http://agent"+api.PathDeployments)
	if code == 403 {
		t.Errorf("root POST refused: %s", body)
	}
	// Browsers are refused, even for root.
	code, body = curlAs(t, nil, h.socket, "-H", "Origin: http://evil.example", "http://agent"+api.PathStatus)
	if code != 403 || !strings.Contains(body, api.CodeBrowserRequest) {
		t.Errorf("Origin request: %d %s", code, body)
	}
	code, body = curlAs(t, nil, h.socket, "-H", "Referer: http://evil.example/x", "http://agent"+api.PathStatus)
	if code != 403 {
		t.Errorf("Referer request: %d %s", code, body)
	}
	// Every answer carries Server-Version and schema_version.
	out, err := exec.Command("curl", "-s", "-i", "--unix-socket", h.socket, "http://agent/v1/nope").CombinedOutput()
	if err != nil || !regexp.MustCompile(`(?i)server-version: \S+`).Match(out) || !strings.Contains(string(out), `"schema_version": 1`) {
		t.Errorf("404 answer lacks Server-Version or schema_version: %v\n%s", err, out)
	}
}

// curlAs makes a request with curl (an independent client) as another user.
func curlAs(t *testing.T, cred *syscall.Credential, socket string, args ...string) (int, string) {
	t.Helper()
	all := append([]string{"-s", "-o", "-", "-w", "\n%{http_code}", "--unix-socket", socket}, args...)
	cmd := exec.Command("curl", all...)
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		cmd.Dir = "/"
	}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("curl %v: %v %s", args, err, out)
	}
	s := strings.TrimRight(string(out), "\n")
	i := strings.LastIndex(s, "\n")
	var code int
	fmt.Sscanf(s[i+1:], "%d", &code)
	return code, s[:max(i, 0)]
}

// sd_notify on a real NOTIFY_SOCKET: STATUS while starting, READY, watchdog
// pings, SIGHUP reload, STOPPING, in that order.
func TestSdNotifyLifecycle(t *testing.T) {
	h := newHost(t, "")
	ns, err := testbed.ListenNotify(h.dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h.start("NOTIFY_SOCKET="+ns.Path, "WATCHDOG_USEC=400000")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := ns.WaitFor(ctx, "WATCHDOG=1"); err != nil {
		t.Fatal(err)
	}
	// A bad config on SIGHUP keeps the old one and says so.
	good, _ := os.ReadFile(h.config)
	if err := os.WriteFile(h.config, append(good, []byte("bogus_key: 1\n")...), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := h.agent.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if _, err := ns.WaitFor(ctx, "reload failed"); err != nil {
		t.Fatal(err)
	}
	if st := h.status(); !strings.Contains(st.Config.ReloadError, `unknown key "bogus_key"`) {
		t.Errorf("status does not show the failed reload: %+v", st.Config)
	}
	h.agent.Stop()
	code, _ := h.agent.Wait(ctx)
	if code != 0 {
		t.Errorf("graceful stop exit %d", code)
	}
	msgs := ns.Messages()
	idx := func(substr string) int {
		return slices.IndexFunc(msgs, func(m string) bool { return strings.Contains(m, substr) })
	}
	starting, ready, wd, reloading, stopping := idx("STATUS=Starting"), idx("READY=1"), idx("WATCHDOG=1"), idx("RELOADING=1"), idx("STOPPING=1")
	if !(starting >= 0 && starting < ready && ready < wd && wd < reloading && reloading < stopping) {
		t.Errorf("sd_notify order wrong: starting=%d ready=%d watchdog=%d reloading=%d stopping=%d\n%q",
			starting, ready, wd, reloading, stopping, msgs)
	}
	if m := msgs[ready]; !strings.Contains(m, "STATUS=Idle") || !strings.Contains(m, h.inst.Doc.InstanceID) {
		t.Errorf("READY carries no human STATUS: %q", m)
	}
}
