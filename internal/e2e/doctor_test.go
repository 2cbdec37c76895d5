package e2e

import (
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rollback-agent/rollback-agent/internal/identity"
	"github.com/rollback-agent/rollback-agent/internal/testbed"
)

// On the demo's bed (no IAM enforced, the demo's config: a channel with a
// release, an HTTP health check, the default ladder) agentctl doctor
// fails nothing and says so; what it cannot know there is a warning.
func TestDoctorPassesOnTheDemosBed(t *testing.T) {
	bed := peers.Get(t)
	bins := peers.Binaries(t)
	awscli(t, bed, nil, "s3api", "create-bucket", "--bucket", "doctor-demo")
	dir := t.TempDir()
	key, pub := filepath.Join(dir, "release.key"), filepath.Join(dir, "release.pub")
	mustWork(t, workstation(t, bed, bins, "keygen", "--secret-key", key, "--public-key", pub), "keygen")
	channel := "s3://doctor-demo/demo/channels/prod.json"
	h := newHostWith(t, testbed.InstanceOptions{DataPlane: true}, "")
	port, _ := testbed.FreePort()
	app := testbed.WebApp{Dir: filepath.Join(h.dir, "srv", "web"), Run: filepath.Join(h.dir, "run"), Port: port}
	t.Cleanup(app.Stop)
	h.writeConfig(fmt.Sprintf(`sources: {channel: %q, poll_interval: 1s}
trust: {public_keys: [%q], require_signature: true}
health:
  checks:
    - {name: web, http: {url: %q, body_contains: v, timeout: 1s}}
`, channel, pub, app.URL()))
	h.start()
	v1 := filepath.Join(t.TempDir(), "v1")
	if err := app.Revision("v1", "").WriteDir(v1); err != nil {
		t.Fatal(err)
	}
	mustWork(t, workstation(t, bed, bins, "push", v1, "--bucket", "doctor-demo", "--app", "demo", "--version", "v1", "--sign-key", key, "--channel", "prod", "--destination", app.Dir), "push v1")
	waitRevision(t, h, "v1")

	code, lines := h.doctor(t)
	if code != 0 {
		t.Fatalf("agentctl doctor exit %d on the demo's bed:\n%v", code, lines)
	}
	for name, want := range map[string]string{
		"imds": "ok: IMDSv2 at", "identity": "ok: instance " + h.inst.Doc.InstanceID, "ec2:CreateSnapshots": "ok: allowed (DryRun",
		"ec2:CreateVolume": "ok: allowed (DryRun", "ec2:DetachVolume": "ok: allowed (DryRun", "ec2:AttachVolume": "warn: not asked: no volume made by a restore yet",
		"channel": "ok: " + channel + " is readable", "volume " + h.inst.DataVolumeID: "ok: data volume /dev/sdf at /dev/loop",
		"volume " + h.inst.RootVolumeID: "ok: root volume", "pending snapshots": "ok: pending per volume", "unit": "warn: ",
		// The bed's fixed test keys are a user's, not an instance profile.
		"credentials": "warn: credentials of arn:aws:",
		// The bed has a writable cgroup v2 hierarchy (issue 17.17).
		"hook containment": "ok: each hook runs in a cgroup of its own under /",
	} {
		if len(lines[name]) != 1 || !strings.HasPrefix(lines[name][0], want) {
			t.Errorf("doctor line %q = %v, want it to start %q", name, lines[name], want)
		}
	}
	r := h.ctl("doctor")
	t.Logf("agentctl doctor:\n%s", r.stdout)
	if r.code != 0 || !strings.Contains(r.stdout, "CHECK") || !strings.Contains(r.stdout, "ready: nothing failed") {
		t.Errorf("agentctl doctor (table): exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// Each thing a first real run lacks is named by agentctl doctor, with
// exit 1: an action the role's policy lacks (the grant: action and
// resource), the channel's bucket, a health check's alarm, and the
// ListBucket that gives 404s for a channel not made yet.
func TestDoctorNamesWhatIsMissing(t *testing.T) {
	s := newStack(t, "ra-doctor", map[string]string{"CreateReleaseBucket": "false", "ReleaseBucket": "ra-doctor-no-such-bucket"})
	withBucket := newStack(t, "ra-doctor-b", nil)
	for _, c := range []struct {
		name   string
		stack  *stack
		policy func(t *testing.T) map[string]any
		config string
		line   string
		want   []string
	}{
		{"an action the policy lacks", withBucket,
			func(t *testing.T) map[string]any {
				return without(t, withBucket.instancePolicy(t), "OnlyTheCallingInstance", "ec2:CreateSnapshots")
			}, "", "ec2:CreateSnapshots",
			[]string{"fail: missing grant: ec2:CreateSnapshots on arn:aws:ec2:us-east-1:123456789012:instance/i-", "packaging/iam/instance-policy.json", "role ra-doctor-b-InstanceRole-"}},
		{"a bucket that does not exist", s, nil, "", "channel",
			[]string{"fail: bucket ra-doctor-no-such-bucket does not exist (NoSuchBucket)", "CreateReleaseBucket=true"}},
		{"an alarm that does not exist", withBucket, nil,
			"health: {checks: [{name: errors, cloudwatch_alarm: {alarm_names: [no-such-alarm]}}]}\n", "alarm no-such-alarm",
			[]string{"fail: alarm no-such-alarm does not exist in us-east-1 (health check errors)", "CreateHealthAlarm=true"}},
		{"ListBucket only for listings", withBucket,
			func(t *testing.T) map[string]any {
				doc := withBucket.instancePolicy(t)
				for _, st := range doc["Statement"].([]any) {
					m := st.(map[string]any)
					if m["Sid"] == "ListTheReleasePrefix" {
						m["Condition"] = map[string]any{"StringLike": m["Condition"].(map[string]any)["StringLikeIfExists"]}
					}
				}
				return doc
			}, "", "channel",
			[]string{"fail: s3://ra-doctor-b-releases/releases/demo/channels/prod.json does not exist yet, but S3 answers 403 instead of 404", "StringLikeIfExists"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.policy != nil {
				c.stack.setInstancePolicy(t, c.policy(t))
			}
			h := c.stack.newHost(t, c.config)
			h.start()
			code, lines := h.doctor(t)
			if code != 1 {
				t.Errorf("doctor exit %d, want 1:\n%v", code, lines)
			}
			got := strings.Join(lines[c.line], "\n")
			for _, w := range c.want {
				if !strings.Contains(got, w) {
					t.Errorf("doctor line %q = %q, want %q", c.line, got, w)
				}
			}
			var failed []string
			for name, ls := range lines {
				for _, l := range ls {
					if strings.HasPrefix(l, "fail: ") {
						failed = append(failed, name)
					}
				}
			}
			if len(failed) != 1 || failed[0] != c.line {
				t.Errorf("failed lines %v, want only %q:\n%v", failed, c.line, lines)
			}
			r := h.ctl("doctor")
			t.Logf("agentctl doctor:\n%s", r.stdout)
			if r.code != 1 || !strings.Contains(r.stdout, "FAIL") || !strings.Contains(r.stdout, "fix: ") ||
				!strings.Contains(r.stdout, "1 check(s) FAILED") {
				t.Errorf("agentctl doctor (table): exit %d\n%s%s", r.code, r.stdout, r.stderr)
			}
		})
	}
}

// partitionedLoop makes a loop device whose image holds an MBR partition
// table with one partition (the kernel shows it as loopNp1), written here
// byte by byte: the table is the MBR's four 16-byte entries at offset 446
// and the 0x55AA signature at 510.
func partitionedLoop(t *testing.T) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "disk.img")
	const sectors = 16384 // 8 MiB
	b := make([]byte, 512)
	entry := b[446:462]
	entry[4] = 0x83 // Linux
	binary.LittleEndian.PutUint32(entry[8:], 2048)
	binary.LittleEndian.PutUint32(entry[12:], sectors-2048)
	b[510], b[511] = 0x55, 0xAA
	if err := os.WriteFile(img, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, sectors*512); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--find", "--show", "--partscan", img).Output()
	if err != nil {
		t.Fatalf("losetup --partscan: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "--detach", dev).Run() })
	// The loop driver may leave the scan to userspace (max_part=0, as in
	// many containers): partx asks the kernel for the partition (BLKPG).
	part := filepath.Join("/sys/class/block", filepath.Base(dev), filepath.Base(dev)+"p1")
	if _, err := os.Stat(part); err != nil {
		if out, err := exec.Command("partx", "--add", dev).CombinedOutput(); err != nil {
			t.Fatalf("partx --add %s: %v %s", dev, err, out)
		}
	}
	if _, err := os.Stat(part); err != nil {
		t.Fatalf("the kernel shows no partition of %s: %v", dev, err)
	}
	return dev
}

// A data volume whose filesystem sits on a partition: the volumes rung
// cannot swap it, and agentctl doctor says so (it reads the partitions
// from sysfs, as the kernel shows them).
func TestDoctorNamesAPartitionedDataVolume(t *testing.T) {
	h := newHostWith(t, testbed.InstanceOptions{DataPlane: true}, "")
	dev := partitionedLoop(t)
	link := filepath.Join(h.byID, identity.ByIDLinkName(h.inst.DataVolumeID))
	orig, err := os.Readlink(link)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(link); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(dev, link); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.Remove(link)
		os.Symlink(orig, link)
	})
	h.start()
	code, lines := h.doctor(t)
	got := strings.Join(lines["volume "+h.inst.DataVolumeID], "\n")
	want := fmt.Sprintf("fail: data volume /dev/sdf at %s has partitions %sp1: the volumes rung swaps whole volumes", dev, filepath.Base(dev))
	if code != 1 || !strings.Contains(got, want) || !strings.Contains(got, "take volumes out of rollback.ladder") {
		t.Errorf("doctor exit %d, data volume line %q, want %q", code, got, want)
	}
}
