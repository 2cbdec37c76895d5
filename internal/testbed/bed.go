package testbed

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// Region and credentials of the test bed.
const (
	Region    = "us-east-1"
	AccessKey = "testing"
	SecretKey = "testing"
)

// Bed is moto plus the AWS proxy in front of it. Instances (each with its
// own IMDS mock) are created on it with NewInstance.
type Bed struct {
	Moto *Moto
	// AWS is the proxy the agent talks to (AWS_ENDPOINT_URL).
	AWS *Proxy
	// EC2 talks to moto directly, for setting up scenarios and checking
	// results without touching the proxy's counters.
	EC2 *ec2.Client
	// RootReplaceDelay is how long a CreateReplaceRootVolumeTask stays
	// pending before it goes in-progress (default 500ms). Set it before
	// creating the task.
	RootReplaceDelay time.Duration

	sim       *sim
	mu        sync.Mutex
	instances []*Instance
	// creds are what the bed and its tools sign with: the fixed test
	// keys, or with IAM enforced the administrator the bed made.
	creds aws.Credentials
	enf   *enforcer // nil unless IAM is enforced
}

// Options shape StartWith.
type Options struct {
	// EnforceIAM turns moto's IAM enforcement on and has the proxy
	// evaluate the EC2 and CloudWatch calls of the principals the bed
	// hands credentials to (instance profiles, users it makes) with their
	// policies, resources and conditions (enforce.go). The bed itself then
	// signs as an administrator user it creates.
	EnforceIAM bool
}

// Start starts moto and the proxy.
func Start(ctx context.Context) (*Bed, error) { return StartWith(ctx, Options{}) }

// StartWith starts moto and the proxy with options.
func StartWith(ctx context.Context, o Options) (*Bed, error) {
	var env []string
	if o.EnforceIAM {
		env = append(env, fmt.Sprintf("INITIAL_NO_AUTH_ACTION_COUNT=%d", bootstrapCalls))
	}
	m, err := StartMotoWith(ctx, env)
	if err != nil {
		return nil, err
	}
	creds := aws.Credentials{AccessKeyID: AccessKey, SecretAccessKey: SecretKey, Source: "testbed"}
	if o.EnforceIAM {
		if creds, err = bootstrapAdmin(ctx, m.URL); err != nil {
			m.Stop()
			return nil, err
		}
	}
	px, err := StartProxy("aws", m.URL)
	if err != nil {
		m.Stop()
		return nil, err
	}
	dp, err := newDataPlane()
	if err != nil {
		px.Stop()
		m.Stop()
		return nil, err
	}
	b := &Bed{Moto: m, AWS: px, RootReplaceDelay: 500 * time.Millisecond, creds: creds}
	b.sim = newSim(m.URL, b.credentials(), dp, func() time.Duration { return b.RootReplaceDelay })
	px.setInterceptor(b.sim.interceptor())
	b.EC2 = ec2.New(ec2.Options{Region: Region, BaseEndpoint: aws.String(m.URL), Credentials: b.credentials()})
	if o.EnforceIAM {
		b.enf = newEnforcer(b)
		px.setAuthz(b.enf.authorize, b.enf.sign)
	}
	return b, nil
}

// credentials is a provider of the bed's own credentials.
func (b *Bed) credentials() aws.CredentialsProvider {
	return credentials.NewStaticCredentialsProvider(b.creds.AccessKeyID, b.creds.SecretAccessKey, "")
}

// AWSConfig returns an SDK config that talks to moto directly.
func (b *Bed) AWSConfig() aws.Config {
	return aws.Config{Region: Region, BaseEndpoint: aws.String(b.Moto.URL), Credentials: b.credentials()}
}

// Close stops every instance's IMDS mock, the proxy and moto, and frees
// the data plane: background root replacements end first (a callback
// still running is waited for), then mounts, loop devices and images go.
func (b *Bed) Close() {
	b.sim.close()
	b.mu.Lock()
	insts := b.instances
	b.instances = nil
	b.mu.Unlock()
	for _, i := range insts {
		i.Close()
	}
	b.AWS.Stop()
	b.sim.dp.closeTimers()
	if err := b.sim.dp.close(); err != nil {
		fmt.Fprintf(os.Stderr, "testbed: cleanup of the data plane: %v\n", err)
	}
	b.Moto.Stop()
}

// BaseEnv is the environment every process talking to the bed gets: fake
// credentials, no shared config files of the machine, and AWS endpoints
// pointing at the proxy.
func (b *Bed) BaseEnv() []string {
	env := []string{}
	for _, kv := range os.Environ() {
		switch key, _, _ := strings.Cut(kv, "="); {
		case strings.HasPrefix(key, "AWS_"), key == "NOTIFY_SOCKET", strings.HasPrefix(key, "WATCHDOG_"), key == "GORACE":
			continue
		}
		env = append(env, kv)
	}
	// Binaries built with -race sleep a second at exit (to let late race
	// reports out); every agentctl call of a test would pay it. Races are
	// still reported when they happen, and still fail the exit status.
	env = append(env, "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	return append(env,
		"AWS_ACCESS_KEY_ID="+b.creds.AccessKeyID,
		"AWS_SECRET_ACCESS_KEY="+b.creds.SecretAccessKey,
		"AWS_CONFIG_FILE=/dev/null",
		"AWS_SHARED_CREDENTIALS_FILE=/dev/null",
		"AWS_ENDPOINT_URL="+b.AWS.URL,
	)
}

// withoutCredentials drops the static credentials from an environment, so
// the SDK looks further down its chain (an instance profile through IMDS).
func withoutCredentials(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, "AWS_ACCESS_KEY_ID=") && !strings.HasPrefix(kv, "AWS_SECRET_ACCESS_KEY=") && !strings.HasPrefix(kv, "AWS_SESSION_TOKEN=") {
			out = append(out, kv)
		}
	}
	return out
}

// CLIEnv is BaseEnv plus a region, for awscli and other tools that do
// not read IMDS. It points at moto directly, not the proxy: what a test
// looks at with awscli is what AWS holds, without the proxy's faults.
func (b *Bed) CLIEnv() []string {
	env := b.BaseEnv()
	for i, kv := range env {
		if strings.HasPrefix(kv, "AWS_ENDPOINT_URL=") {
			env[i] = "AWS_ENDPOINT_URL=" + b.Moto.URL
		}
	}
	return append(env, "AWS_DEFAULT_REGION="+Region, "AWS_REGION="+Region, "AWS_PAGER=")
}

// Lazy starts a bed the first time a test asks for one and shares it with
// the rest of the test binary; TestMain calls Close.
type Lazy struct {
	// Options start the bed (set before the first Get).
	Options Options

	once sync.Once
	bed  *Bed
	err  error

	buildOnce sync.Once
	bins      Binaries
	buildErr  error
}

// Get returns the shared bed, failing the test (never skipping it) when a
// peer cannot start.
func (l *Lazy) Get(t testing.TB) *Bed {
	t.Helper()
	l.once.Do(func() { l.bed, l.err = StartWith(context.Background(), l.Options) })
	if l.err != nil {
		t.Fatalf("test bed: %v", l.err)
	}
	return l.bed
}

// Close stops the bed if it was started and removes built binaries.
func (l *Lazy) Close() {
	if l.bed != nil {
		l.bed.Close()
	}
	if l.bins.Dir != "" {
		os.RemoveAll(l.bins.Dir)
	}
}

// Binaries builds rollback-agent and agentctl once per test binary.
func (l *Lazy) Binaries(t testing.TB) Binaries {
	t.Helper()
	l.buildOnce.Do(func() { l.bins, l.buildErr = Build(context.Background()) })
	if l.buildErr != nil {
		t.Fatalf("build binaries: %v", l.buildErr)
	}
	return l.bins
}

func wrap(what string, err error) error { return fmt.Errorf("testbed: %s: %w", what, err) }
