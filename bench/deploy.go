package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/testbed"
)

// b1 is the checkpoint's cost on the deploy's critical path, with the
// snapshots' completion held back 30 s by the proxy: the same deploy
// without a checkpoint, and a naive script that snapshots and waits for
// completed before deploying, are the baselines.
func (b *bench) b1(ctx context.Context) (row, error) {
	r := row{id: "B1", what: "deploy with an EBS checkpoint, snapshot completion held back 30 s", bar: "≤ 1 s over no checkpoint; ≤ 5 % of the naive time"}
	release := b.bed.HoldSnapshots(30 * time.Second)
	defer release()
	src := filepath.Join(b.dir, "b1-src")
	var with, without, naive stats
	for i := range b.runs {
		// A fresh host per run: five held snapshots per volume is EBS's
		// limit of pending ones, which the agent would wait for.
		rg, err := b.newRig(ctx, "")
		if err != nil {
			return r, err
		}
		dest := filepath.Join(rg.dir, "srv")
		os.RemoveAll(src)
		if err := genTree(src, dest, 200, 4096, uint64(i), nil); err != nil {
			return r, err
		}
		bundleA, bundleB := filepath.Join(rg.dir, "a.tgz"), filepath.Join(rg.dir, "b.tgz")
		if err := tgz(ctx, src, bundleA); err != nil {
			return r, err
		}
		os.WriteFile(filepath.Join(src, "app", "marker"), []byte("b"), 0o644)
		if err := tgz(ctx, src, bundleB); err != nil {
			return r, err
		}
		d, err := rg.deploy(ctx, bundleA)
		if err != nil {
			rg.close()
			return r, err
		}
		with = append(with, took(d))
		// The same deploy without a checkpoint (config reloaded by SIGHUP).
		if err := rg.writeConfig("checkpoint: {before_deploy: []}\n"); err != nil {
			return r, err
		}
		rg.agent.Signal(syscall.SIGHUP)
		time.Sleep(300 * time.Millisecond)
		d, err = rg.deploy(ctx, bundleB)
		if err != nil {
			rg.close()
			return r, err
		}
		without = append(without, took(d))
		// The naive script: snapshot, wait for completed, then deploy.
		t0 := time.Now()
		if err := b.naiveSnapshot(ctx, rg); err != nil {
			rg.close()
			return r, err
		}
		if _, err = rg.deploy(ctx, bundleA); err != nil {
			rg.close()
			return r, err
		}
		naive = append(naive, time.Since(t0))
		rg.close()
	}
	over := with.median() - without.median()
	share := float64(with.median()) / float64(naive.median())
	r.baseline = fmt.Sprintf("no checkpoint %s; naive snapshot+wait+deploy %s", without, naive)
	r.measured = fmt.Sprintf("%s: +%s over no checkpoint, %.1f %% of naive", with, round(over), 100*share)
	r.verdict = verdict(over <= time.Second && share <= 0.05, fmt.Sprintf("+%s, %.1f %%", round(over), 100*share))
	return r, nil
}

// naiveSnapshot is what a person writes without the agent: awscli
// create-snapshots for the instance, then aws ec2 wait snapshot-completed.
func (b *bench) naiveSnapshot(ctx context.Context, rg *rig) error {
	env := append(rg.inst.Env(), "AWS_DEFAULT_REGION="+testbed.Region, "AWS_PAGER=")
	cmd := exec.CommandContext(ctx, "sh", "-c", `set -e
ids=$(aws ec2 create-snapshots --instance-specification InstanceId=`+rg.inst.Doc.InstanceID+` --query 'Snapshots[].SnapshotId' --output text)
aws ec2 wait snapshot-completed --snapshot-ids $ids`)
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("naive snapshot script: %v: %s", err, out)
	}
	return nil
}

// b2 is a rollback between two 10 000-file, 200 MB revisions that differ
// in 100 files, against a fresh deploy of the old revision from S3 onto
// a clean destination.
func (b *bench) b2(ctx context.Context) (row, error) {
	r := row{id: "B2", what: "rollback v2→v1: 10 000 files, 200 MB, 100 files differ (no-op hooks)", bar: "rollback ≥ 30× faster than the fresh deploy"}
	rg, err := b.newRig(ctx, "checkpoint: {before_deploy: [ebs]}\n")
	if err != nil {
		return r, err
	}
	closed := false
	defer func() {
		if !closed {
			rg.close()
		}
	}()
	// The destination lives outside the rig so that the baseline's clean
	// hosts below install to the same path the appspec names.
	dest := filepath.Join(b.dir, "b2-srv")
	changed := map[int]bool{}
	for i := 0; i < 10000; i += 100 {
		changed[i] = true
	}
	v1dir, v2dir := filepath.Join(b.dir, "b2-v1"), filepath.Join(b.dir, "b2-v2")
	if err := genTree(v1dir, dest, 10000, 20*1024, 7, nil); err != nil {
		return r, err
	}
	if err := genTree(v2dir, dest, 10000, 20*1024, 7, changed); err != nil {
		return r, err
	}
	v1, v2 := filepath.Join(b.dir, "b2-v1.tgz"), filepath.Join(b.dir, "b2-v2.tgz")
	if err := tgz(ctx, v1dir, v1); err != nil {
		return r, err
	}
	if err := tgz(ctx, v2dir, v2); err != nil {
		return r, err
	}
	os.RemoveAll(v1dir)
	os.RemoveAll(v2dir)
	if _, err := rg.deploy(ctx, v1, "--revision", "v1"); err != nil {
		return r, err
	}
	if _, err := rg.deploy(ctx, v2, "--revision", "v2"); err != nil {
		return r, err
	}
	var rollback stats
	var steps stepTimes
	stopTrace, err := rg.startTrace()
	if err != nil {
		return r, err
	}
	defer stopTrace()
	// The agent's CPU time per rollback: the work it does, much less
	// sensitive than the wall time to what else the machine runs.
	var cpu stats
	for range b.runs {
		c0 := cpuTime(rg.agent.PID())
		d, err := rg.run(ctx, "rollback", "--to", "v1")
		if err != nil {
			return r, err
		}
		cpu = append(cpu, cpuTime(rg.agent.PID())-c0)
		rollback = append(rollback, took(d))
		steps.add(d)
		if _, err := rg.run(ctx, "rollback", "--to", "v2"); err != nil {
			return r, err
		}
	}
	stopTrace()
	fmt.Fprintf(os.Stderr, "bench: B2: rollback steps (medians): %s\n", steps.all())
	rg.close()
	closed = true
	// The baseline: v1 from S3 onto a clean host, each time.
	bucket := fmt.Sprintf("bench-%d", time.Now().UnixNano())
	if err := b.awscli(ctx, "s3api", "create-bucket", "--bucket", bucket); err != nil {
		return r, err
	}
	if err := b.awscli(ctx, "s3", "cp", v1, "s3://"+bucket+"/v1.tgz"); err != nil {
		return r, err
	}
	var fresh stats
	for range b.runs {
		if err := os.RemoveAll(dest); err != nil {
			return r, err
		}
		clean, err := b.newRig(ctx, "")
		if err != nil {
			return r, err
		}
		d, err := clean.deploy(ctx, "s3://"+bucket+"/v1.tgz")
		clean.close()
		if err != nil {
			return r, err
		}
		fresh = append(fresh, took(d))
	}
	ratio := float64(fresh.median()) / float64(rollback.median())
	r.baseline = "fresh deploy of v1 from S3: " + fresh.String()
	r.measured = fmt.Sprintf("rollback %s: %.1f× faster; medians by step: %s; agent CPU per rollback %s", rollback, ratio, &steps, cpu)
	r.verdict = verdict(ratio >= 30, fmt.Sprintf("%.1f×, %.0f ms over the bar's %s", ratio, float64(rollback.median()-fresh.median()/30)/1e6, round(fresh.median()/30)))
	return r, nil
}

func (b *bench) awscli(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, "aws", args...)
	cmd.Env = b.bed.CLIEnv()
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("aws %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}
