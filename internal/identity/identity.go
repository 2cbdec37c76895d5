// Package identity finds out who the agent is: the instance, region, zone
// and account from IMDSv2 (or the config on on-prem hosts), and the
// instance's own EBS volumes with the Linux block device of each.
package identity

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/rollback-agent/rollback-agent/internal/api"
)

// Doc is the instance's identity before its volumes are known.
type Doc struct {
	InstanceID       string
	Region           string
	AvailabilityZone string
	AccountID        string
	InstanceType     string
	Source           string // "imds" or "config"
}

// Errors a caller can test for.
var (
	ErrIMDSDisabled    = errors.New("IMDS is turned off for this instance")
	ErrIMDSUnreachable = errors.New("IMDS is unreachable")
	ErrUnknownInstance = errors.New("instance is not known to EC2")
)

// IMDSEndpoint is the endpoint the SDK will use, for messages.
func IMDSEndpoint() string {
	if v := os.Getenv("AWS_EC2_METADATA_SERVICE_ENDPOINT"); v != "" {
		return v
	}
	return "http://169.254.169.254"
}

// NewIMDSClient returns an IMDS client that speaks IMDSv2 only: with the
// fallback off, a refused token request is an error instead of a silent
// downgrade to unauthenticated IMDSv1.
func NewIMDSClient() *imds.Client {
	return imds.New(imds.Options{EnableFallback: aws.FalseTernary})
}

// Discover returns the identity document: from the config when instanceID
// and region are set (on-prem), otherwise from IMDSv2. Network failures are
// retried until wait has passed, since IMDS can lag the network at boot; a
// 403 (IMDS turned off) is final at once.
func Discover(ctx context.Context, instanceID, region string, wait time.Duration) (Doc, error) {
	if instanceID != "" {
		return Doc{InstanceID: instanceID, Region: region, Source: "config"}, nil
	}
	client := NewIMDSClient()
	return retryFor(ctx, wait, 2*time.Second, ErrIMDSUnreachable, func() (Doc, error) { return readIMDS(ctx, client) })
}

// retryFor calls fn until it succeeds or fails with something other than
// transient, backing off from 250 ms to maxBackoff, while another try
// still fits in wait.
func retryFor[T any](ctx context.Context, wait, maxBackoff time.Duration, transient error, fn func() (T, error)) (T, error) {
	deadline := time.Now().Add(wait)
	backoff := 250 * time.Millisecond
	for {
		v, err := fn()
		if err == nil || !errors.Is(err, transient) || time.Now().Add(backoff).After(deadline) {
			return v, err
		}
		select {
		case <-ctx.Done():
			var zero T
			return zero, fmt.Errorf("%w (gave up: %v)", err, ctx.Err())
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

func readIMDS(ctx context.Context, client *imds.Client) (Doc, error) {
	out, err := client.GetInstanceIdentityDocument(ctx, &imds.GetInstanceIdentityDocumentInput{})
	if err != nil {
		return Doc{}, classifyIMDS(ctx, err)
	}
	d := out.InstanceIdentityDocument
	doc := Doc{
		InstanceID:       d.InstanceID,
		Region:           d.Region,
		AvailabilityZone: d.AvailabilityZone,
		AccountID:        d.AccountID,
		InstanceType:     d.InstanceType,
		Source:           "imds",
	}
	if doc.InstanceID == "" || doc.Region == "" {
		return Doc{}, fmt.Errorf("identity: IMDS at %s returned an identity document without instanceId or region", IMDSEndpoint())
	}
	return doc, nil
}

// classifyIMDS turns an SDK error into one that says what is wrong. The
// SDK hides the token request's HTTP status behind an error type without
// Unwrap, so the token request is repeated once, plainly, to learn it.
func classifyIMDS(ctx context.Context, err error) error {
	ep := IMDSEndpoint()
	status, probeErr := probeToken(ctx, ep)
	switch {
	case probeErr != nil:
		return fmt.Errorf("identity: cannot reach IMDS at %s (%v): %w; "+
			"on EC2 check the instance's metadata options (HttpEndpoint, hop limit); "+
			"on a host outside EC2 set instance_id and region in agent.yaml", ep, probeErr, ErrIMDSUnreachable)
	case status == http.StatusForbidden:
		return fmt.Errorf("identity: IMDS at %s answered 403 Forbidden to the IMDSv2 token request: %w; "+
			"turn it on (aws ec2 modify-instance-metadata-options --http-endpoint enabled --http-tokens required) "+
			"or, on a host outside EC2, set instance_id and region in agent.yaml", ep, ErrIMDSDisabled)
	case status != http.StatusOK:
		return fmt.Errorf("identity: IMDS at %s answered HTTP %d to the IMDSv2 token request (IMDSv1 is never used): %w", ep, status, err)
	}
	return fmt.Errorf("identity: read the identity document from IMDS at %s: %w", ep, err)
}

// probeToken makes one IMDSv2 token request and returns its status.
func probeToken(ctx context.Context, endpoint string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, strings.TrimRight(endpoint, "/")+"/latest/api/token", nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "60")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			return 0, ue.Err
		}
		return 0, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	return resp.StatusCode, nil
}

// EC2API is the part of the EC2 client identity needs.
type EC2API interface {
	DescribeInstances(context.Context, *ec2.DescribeInstancesInput, ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
	DescribeVolumes(context.Context, *ec2.DescribeVolumesInput, ...func(*ec2.Options)) (*ec2.DescribeVolumesOutput, error)
}

// Describe completes doc with what EC2 knows of the instance: zone, type,
// account (for on-prem configs) and its EBS volumes with their devices.
//
// When IMDS named the instance (doc.Source "imds") it exists, and an
// InvalidInstanceID.NotFound (or a list without it) is EC2's eventual
// consistency right after RunInstances ("Eventual consistency in the
// Amazon EC2 API", https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html):
// Describe asks again, backing off, for up to wait. An id from the config
// may be a typo and fails at once.
func Describe(ctx context.Context, client EC2API, doc Doc, byIDDir string, wait time.Duration) (api.Identity, error) {
	if doc.Source != "imds" {
		wait = 0
	}
	return retryFor(ctx, wait, 4*time.Second, ErrUnknownInstance, func() (api.Identity, error) {
		return describeOnce(ctx, client, doc, byIDDir)
	})
}

func describeOnce(ctx context.Context, client EC2API, doc Doc, byIDDir string) (api.Identity, error) {
	out, err := client.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{doc.InstanceID}})
	if err != nil {
		var ae smithy.APIError
		if errors.As(err, &ae) && strings.HasPrefix(ae.ErrorCode(), "InvalidInstanceID") {
			return api.Identity{}, fmt.Errorf("identity: DescribeInstances for %s in %s: %s: %w", doc.InstanceID, doc.Region, ae.ErrorCode(), ErrUnknownInstance)
		}
		return api.Identity{}, fmt.Errorf("identity: DescribeInstances for %s in %s: %w", doc.InstanceID, doc.Region, err)
	}
	var inst *types.Instance
	var owner string
	for _, r := range out.Reservations {
		for i := range r.Instances {
			if aws.ToString(r.Instances[i].InstanceId) == doc.InstanceID {
				inst = &r.Instances[i]
				owner = aws.ToString(r.OwnerId)
			}
		}
	}
	if inst == nil {
		return api.Identity{}, fmt.Errorf("identity: DescribeInstances for %s in %s returned no such instance: %w", doc.InstanceID, doc.Region, ErrUnknownInstance)
	}
	id := api.Identity{
		InstanceID:       doc.InstanceID,
		Region:           doc.Region,
		AvailabilityZone: doc.AvailabilityZone,
		AccountID:        doc.AccountID,
		InstanceType:     doc.InstanceType,
		Source:           doc.Source,
		RootDeviceName:   aws.ToString(inst.RootDeviceName),
	}
	if id.AvailabilityZone == "" && inst.Placement != nil {
		id.AvailabilityZone = aws.ToString(inst.Placement.AvailabilityZone)
	}
	if id.InstanceType == "" {
		id.InstanceType = string(inst.InstanceType)
	}
	if id.AccountID == "" {
		id.AccountID = owner
	}
	vols, err := describeVolumes(ctx, client, inst, byIDDir)
	if err != nil {
		return api.Identity{}, fmt.Errorf("identity: volumes of %s: %w", doc.InstanceID, err)
	}
	id.Volumes = vols
	return id, nil
}

// describeVolumes lists the instance's EBS volumes from its block device
// mappings (authoritative, unlike IMDS block-device-mapping which misses
// volumes attached after launch) and adds each volume's details.
func describeVolumes(ctx context.Context, client EC2API, inst *types.Instance, byIDDir string) ([]api.Volume, error) {
	root := aws.ToString(inst.RootDeviceName)
	var ids []string
	byID := map[string]*api.Volume{}
	var vols []api.Volume
	for _, m := range inst.BlockDeviceMappings {
		if m.Ebs == nil || m.Ebs.VolumeId == nil {
			continue
		}
		v := api.Volume{VolumeID: *m.Ebs.VolumeId, DeviceName: aws.ToString(m.DeviceName)}
		v.Root = v.DeviceName == root
		vols = append(vols, v)
		ids = append(ids, v.VolumeID)
	}
	if len(ids) == 0 {
		return []api.Volume{}, nil
	}
	for i := range vols {
		byID[vols[i].VolumeID] = &vols[i]
	}
	out, err := client.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: ids})
	if err != nil {
		return nil, fmt.Errorf("DescribeVolumes %s: %w", strings.Join(ids, ","), err)
	}
	for _, d := range out.Volumes {
		v := byID[aws.ToString(d.VolumeId)]
		if v == nil {
			continue
		}
		v.SizeGiB = aws.ToInt32(d.Size)
		v.VolumeType = string(d.VolumeType)
		v.Iops = aws.ToInt32(d.Iops)
		v.Throughput = aws.ToInt32(d.Throughput)
		v.Encrypted = aws.ToBool(d.Encrypted)
	}
	for i := range vols {
		dev, err := FindDevice(byIDDir, vols[i].VolumeID, vols[i].DeviceName)
		if err != nil {
			vols[i].LinuxDeviceError = err.Error()
		} else {
			vols[i].LinuxDevice = dev
		}
	}
	// Root first, then by device name, so output is stable.
	sort.SliceStable(vols, func(i, j int) bool {
		if vols[i].Root != vols[j].Root {
			return vols[i].Root
		}
		return vols[i].DeviceName < vols[j].DeviceName
	})
	return vols, nil
}
