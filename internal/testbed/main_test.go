package testbed

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/smithy-go"

	"github.com/rollback-agent/rollback-agent/internal/mountinfo"
)

// bed is the one test bed of this package's tests, started by TestMain.
// Tests run one after another: they share the proxy's counters.
var bed *Bed

func TestMain(m *testing.M) {
	before, err := mountPoints()
	if err != nil {
		fmt.Fprintln(os.Stderr, "read mounts:", err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	bed, err = Start(ctx)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "test bed:", err)
		os.Exit(1)
	}
	bed.RootReplaceDelay = 200 * time.Millisecond
	// Each test here is about one rule of the bed; the consistency
	// window has its own tests (consistency_test.go), which turn it on.
	// Every test of the agent (e2e, checkpoint) runs with it on.
	bed.SetRules(Rules{UdevDelay: bed.Rules().UdevDelay})
	dir := bed.sim.dp.dir
	code := m.Run()
	bed.Close()
	enforced.Close()
	if err := checkNoLeaks(dir, before); err != nil {
		fmt.Fprintln(os.Stderr, "leak after the tests:", err)
		code = 1
	}
	os.Exit(code)
}

// checkNoLeaks fails when a loop device still uses an image of the bed,
// the bed's directory is left, or a mount appeared under the temp dir.
func checkNoLeaks(dir string, before map[string]string) error {
	var errs []error
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err == nil && strings.HasPrefix(strings.TrimSpace(string(b)), dir) {
			errs = append(errs, fmt.Errorf("%s still backs %s", strings.TrimSpace(string(b)), f))
		}
	}
	if _, err := os.Stat(dir); err == nil {
		errs = append(errs, fmt.Errorf("%s still exists", dir))
	}
	after, err := mountPoints()
	if err != nil {
		return err
	}
	for mp, dev := range after {
		// Other packages' tests run at the same time and mount their own
		// loop devices: only a mount of one of this bed's images is a leak.
		if before[mp] != "" || !strings.HasPrefix(mp, os.TempDir()) {
			continue
		}
		b, err := os.ReadFile("/sys/dev/block/" + dev + "/loop/backing_file")
		if err == nil && strings.HasPrefix(strings.TrimSpace(string(b)), dir) {
			errs = append(errs, fmt.Errorf("mount left at %s", mp))
		}
	}
	return errors.Join(errs...)
}

// mountPoints maps each mount point to its device's major:minor.
func mountPoints() (map[string]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fs := strings.Fields(sc.Text()); len(fs) >= 5 {
			out[mountinfo.Unescape(fs[4])] = fs[2]
		}
	}
	return out, sc.Err()
}

// viaProxy is the agent's view: the real SDK client talking to the proxy.
func viaProxy(opts ...func(*ec2.Options)) *ec2.Client {
	return ec2.New(ec2.Options{
		Region:       Region,
		BaseEndpoint: aws.String(bed.AWS.URL),
		Credentials:  credentials.NewStaticCredentialsProvider(AccessKey, SecretKey, ""),
	}, opts...)
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// newInstance creates an instance on the shared bed, closed after the
// test (before t.TempDir directories made earlier are removed).
func newInstance(t *testing.T, o InstanceOptions) *Instance {
	t.Helper()
	i, err := bed.NewInstance(testCtx(t), o)
	if err != nil {
		t.Fatalf("NewInstance: %v", err)
	}
	t.Cleanup(i.Close)
	return i
}

func errCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}
