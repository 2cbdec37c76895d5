package doctor

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/rollback-agent/rollback-agent/internal/identity"
)

// inContainer reports whether this process runs in a container, where an
// IMDSv2 token needs a hop limit of 2 (the token's PUT response has an IP
// TTL of 1 by default; EC2 User Guide, "Configure the instance metadata
// service options", hop limit).
func inContainer() bool {
	for _, f := range []string{"/.dockerenv", "/run/.containerenv"} {
		if _, err := os.Stat(f); err == nil {
			return true
		}
	}
	if os.Getenv("container") != "" {
		return true
	}
	b, err := os.ReadFile("/proc/1/cgroup")
	if err != nil {
		return false
	}
	s := string(b)
	return strings.Contains(s, "docker") || strings.Contains(s, "kubepods") || strings.Contains(s, "containerd") || strings.Contains(s, "/lxc/")
}

// imds: the IMDSv2 token request answers, and the instance refuses IMDSv1.
func (r *report) imds(ctx context.Context) {
	cfg, id := r.in.Config, r.in.Identity
	if cfg.InstanceID != "" {
		r.ok("imds", "not used: instance_id and region come from agent.yaml (a host outside EC2)")
		return
	}
	ep := identity.IMDSEndpoint()
	hop := fmt.Sprintf("aws ec2 modify-instance-metadata-options --instance-id %s --http-put-response-hop-limit 2 --http-endpoint enabled", id.InstanceID)
	status, err := identity.ProbeIMDS(ctx)
	switch {
	case err != nil && inContainer():
		r.fail("imds", fmt.Sprintf("no answer from IMDS at %s (%v), in a container: the token's hop limit is 1 by default", ep, err), hop)
		return
	case err != nil:
		r.fail("imds", fmt.Sprintf("no answer from IMDS at %s: %v", ep, err), "check the instance's metadata options (HttpEndpoint enabled) and any firewall in front of 169.254.169.254")
		return
	case status == http.StatusForbidden:
		r.fail("imds", "IMDS at "+ep+" answers 403 to the IMDSv2 token request: it is turned off", hop)
		return
	case status != http.StatusOK:
		r.fail("imds", fmt.Sprintf("IMDS at %s answers HTTP %d to the IMDSv2 token request", ep, status), "")
		return
	}
	ctx, cancel := bounded(ctx)
	defer cancel()
	out, err := r.in.EC2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id.InstanceID}})
	var mo *types.InstanceMetadataOptionsResponse
	if err == nil {
		for _, res := range out.Reservations {
			for _, i := range res.Instances {
				mo = i.MetadataOptions
			}
		}
	}
	switch {
	case mo == nil:
		r.ok("imds", "IMDSv2 at "+ep+" answers")
	case mo.HttpTokens != types.HttpTokensStateRequired:
		r.warn("imds", "IMDSv2 at "+ep+" answers, and IMDSv1 too (HttpTokens "+string(mo.HttpTokens)+"); the agent uses v2 only",
			fmt.Sprintf("aws ec2 modify-instance-metadata-options --instance-id %s --http-tokens required", id.InstanceID))
	case inContainer() && aws.ToInt32(mo.HttpPutResponseHopLimit) < 2:
		r.warn("imds", fmt.Sprintf("IMDSv2 answers; hop limit %d: tools in containers on this host cannot get a token", aws.ToInt32(mo.HttpPutResponseHopLimit)), hop)
	default:
		r.ok("imds", fmt.Sprintf("IMDSv2 at %s answers (HttpTokens required, hop limit %d)", ep, aws.ToInt32(mo.HttpPutResponseHopLimit)))
	}
}

// identity: who the agent is.
func (r *report) identity() {
	id := r.in.Identity
	r.ok("identity", fmt.Sprintf("instance %s (%s) in %s, account %s, from %s", id.InstanceID, id.InstanceType, id.AvailabilityZone, id.AccountID, id.Source))
}

// layout is how a block device is used below the filesystem.
type layout struct {
	partitions []string // the device's partitions
	holders    []string // devices built on it or its partitions: LVM (dm-*), md
}

// blockLayout reads a device's partitions and holders from sysfs.
func blockLayout(sysClassBlock, dev string) (layout, error) {
	name := filepath.Base(dev)
	dir := filepath.Join(sysClassBlock, name)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return layout{}, err
	}
	var l layout
	holdersOf := func(d string) {
		hs, _ := os.ReadDir(filepath.Join(d, "holders"))
		for _, h := range hs {
			l.holders = append(l.holders, h.Name())
		}
	}
	holdersOf(dir)
	for _, e := range entries {
		if _, err := os.Stat(filepath.Join(dir, e.Name(), "partition")); err == nil {
			l.partitions = append(l.partitions, e.Name())
			holdersOf(filepath.Join(dir, e.Name()))
		}
	}
	return l, nil
}

// volumes: every volume has its block device here, and a data volume the
// volumes rung restores holds its filesystem on the whole device: the
// rung unmounts the device, swaps the volume and mounts the new one's
// filesystem, which cannot be done below a partition table, LVM or md.
func (r *report) volumes() {
	rung := slices.Contains(r.in.Config.Rollback.Ladder, "volumes")
	for _, v := range r.in.Identity.Volumes {
		name := "volume " + v.VolumeID
		role := "data volume " + v.DeviceName
		if v.Root {
			role = "root volume " + v.DeviceName
		}
		if v.LinuxDevice == "" {
			detail := role + ": no block device here: " + v.LinuxDeviceError
			fix := "check devices.by_id_dir in agent.yaml (udev's nvme-Amazon_Elastic_Block_Store_* links) and that the volume is attached"
			if rung && !v.Root {
				r.fail(name, detail+"; the volumes rung cannot restore it", fix)
			} else {
				r.warn(name, detail, fix)
			}
			continue
		}
		l, err := blockLayout(r.in.SysClassBlock, v.LinuxDevice)
		if err != nil {
			r.warn(name, fmt.Sprintf("%s at %s: cannot read its layout: %v", role, v.LinuxDevice, err), "")
			continue
		}
		var below []string
		if len(l.partitions) > 0 {
			below = append(below, "partitions "+strings.Join(l.partitions, ", "))
		}
		if len(l.holders) > 0 {
			below = append(below, "used by "+strings.Join(l.holders, ", ")+" (LVM or md)")
		}
		switch {
		case len(below) == 0:
			r.ok(name, fmt.Sprintf("%s at %s, filesystem on the whole device", role, v.LinuxDevice))
		case v.Root:
			r.ok(name, fmt.Sprintf("%s at %s, %s (the root rung replaces the whole volume)", role, v.LinuxDevice, strings.Join(below, "; ")))
		case rung:
			r.fail(name, fmt.Sprintf("%s at %s has %s: the volumes rung swaps whole volumes and mounts the device itself, so it cannot restore this one", role, v.LinuxDevice, strings.Join(below, "; ")),
				"take volumes out of rollback.ladder (the root rung and restore-instance still work), or keep this volume's filesystem on the whole device")
		default:
			r.ok(name, fmt.Sprintf("%s at %s, %s (the volumes rung is off)", role, v.LinuxDevice, strings.Join(below, "; ")))
		}
	}
}
