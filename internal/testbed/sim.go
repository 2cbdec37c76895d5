package testbed

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
)

// sim is what the proxy adds to moto: its memory of the snapshots and
// images created through it (for held-back completion and faithful
// images), moto's placeholder snapshots it hides, the root-replacement
// tasks, and the EBS data plane.
type sim struct {
	// moto is a client straight to moto: the proxy's own calls must not
	// go through itself, so the counters only count what the agent sent.
	moto *ec2.Client
	dp   *dataPlane
	// delay reads Bed.RootReplaceDelay when a task starts.
	delay func() time.Duration

	// createMu serializes CreateReplaceRootVolumeTask calls (idempotency).
	createMu sync.Mutex

	mu        sync.Mutex
	snaps     map[string]*snapRec
	images    map[string]*imageRec
	hidden    map[string]bool
	snapHold  *hold
	imageHold *hold
	tasks     map[string]*rootTask
	tokens    map[string]string // ClientToken → task id
	onRoot    func(RootReplacement)
	failNext  string
	rules     Rules
	// young are ids inside their consistency window (consistency.go).
	young map[string]time.Time
	// busy are detaches EC2 accepted of volumes still in use (busy.go).
	busy map[string]*busyDetach
	// attaching are attachments whose device has not appeared yet, until
	// when (zero: never, the guest still holds the device name).
	attaching map[string]time.Time
	// heldNames are device names the guest's driver still holds, per
	// instance (busy.go).
	heldNames map[string]map[string]bool
	// idem are the ClientTokens of CreateVolume and RunInstances
	// (limits.go).
	idem map[string]*idemRec
	// ghosts are pending snapshots deleted while pending: they count
	// against their volume's limit until they would have completed.
	ghosts []ghostSnap
	// imageFlags are what the bed adds to images (product codes).
	imageFlags map[string]imageFlag
	// s3NoList and s3Region are the S3 faults (s3rules.go).
	s3NoList map[string]bool
	s3Region map[string]string
	closing  chan struct{}
	closed   bool
	wg       sync.WaitGroup
}

// snapRec is a snapshot created through the proxy.
type snapRec struct {
	id, volumeID string
	created      time.Time
	hold         *hold // nil: never held back
}

// imageRec is an image created through the proxy, as EC2 would describe
// it (moto's own description is a placeholder, see motogaps.go).
type imageRec struct {
	id, instanceID string
	rootDevice     string
	mappings       []imageMapping
	placeholders   []string // moto's snapshots for the image, hidden
	created        time.Time
	hold           *hold
}

// imageMapping is one EBS block device of a faithful image.
type imageMapping struct {
	Device, SnapshotID, VolumeID, VolumeType, KmsKeyID string
	Size, Iops, Throughput                             int32
	DeleteOnTermination, Encrypted                     bool
}

func newSim(motoURL string, creds aws.CredentialsProvider, dp *dataPlane, delay func() time.Duration) *sim {
	return &sim{
		moto:    ec2.New(ec2.Options{Region: Region, BaseEndpoint: aws.String(motoURL), Credentials: creds}),
		dp:      dp,
		delay:   delay,
		snaps:   map[string]*snapRec{},
		images:  map[string]*imageRec{},
		hidden:  map[string]bool{},
		tasks:   map[string]*rootTask{},
		tokens:  map[string]string{},
		closing: make(chan struct{}),
		rules:   defaultRules(),
		young:   map[string]time.Time{}, busy: map[string]*busyDetach{}, attaching: map[string]time.Time{},
		heldNames: map[string]map[string]bool{}, idem: map[string]*idemRec{}, imageFlags: map[string]imageFlag{},
		s3NoList: map[string]bool{}, s3Region: map[string]string{},
	}
}

// interceptor routes EC2 actions to their hooks (the table in motogaps.go).
func (s *sim) interceptor() interceptor {
	byAction := map[string]*hooks{}
	for _, r := range s.routes() {
		if byAction[r.Action] != nil {
			panic("testbed: two routes for " + r.Action) // a programming error in the table
		}
		byAction[r.Action] = r.Hooks
	}
	return func(op Op) *hooks {
		if op.Service != "ec2" {
			return s.serviceGap(op)
		}
		// The rules AWS always applies wrap the route of the action:
		// consistency outermost (it sees the final answer), then the
		// limits and the busy detaches.
		return compose(s.consistency(op), compose(s.limits(op), compose(s.attachments(op), byAction[op.Action])))
	}
}

// close stops background tasks and waits for them.
func (s *sim) close() {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.closing)
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// snapshotCreated records a snapshot moto just created for a call through
// the proxy: it is held back if a hold is active, and the data plane
// copies the volume's image as the snapshot's content.
func (s *sim) snapshotCreated(snapID, volumeID string) error {
	s.mu.Lock()
	s.snaps[snapID] = &snapRec{id: snapID, volumeID: volumeID, created: time.Now(), hold: s.snapHold}
	s.mu.Unlock()
	if err := s.dp.snapshot(volumeID, snapID); err != nil {
		return fmt.Errorf("data plane: snapshot %s of %s: %w", snapID, volumeID, err)
	}
	return nil
}

// forgetSnapshot drops what the proxy knows of a deleted snapshot.
func (s *sim) forgetSnapshot(snapID string) {
	s.mu.Lock()
	delete(s.snaps, snapID)
	s.mu.Unlock()
	s.dp.deleteSnapshot(snapID)
}

func opCtx(c context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(c, 30*time.Second)
}

// describeInstance asks moto (directly) about one instance.
func (s *sim) describeInstance(ctx context.Context, id string) (types.Instance, error) {
	ctx, cancel := opCtx(ctx)
	defer cancel()
	out, err := s.moto.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		return types.Instance{}, err
	}
	for _, r := range out.Reservations {
		for _, i := range r.Instances {
			if aws.ToString(i.InstanceId) == id {
				return i, nil
			}
		}
	}
	return types.Instance{}, &apiError{code: "InvalidInstanceID.NotFound", msg: fmt.Sprintf("The instance ID '%s' does not exist", id)}
}

// describeVolumes asks moto (directly) about volumes, by id.
func (s *sim) describeVolumes(ctx context.Context, ids []string) (map[string]types.Volume, error) {
	ctx, cancel := opCtx(ctx)
	defer cancel()
	out, err := s.moto.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: ids})
	if err != nil {
		return nil, err
	}
	m := map[string]types.Volume{}
	for _, v := range out.Volumes {
		m[aws.ToString(v.VolumeId)] = v
	}
	return m, nil
}

// apiError is an EC2 error the proxy raises itself, shaped like the SDK's
// so errorReply answers it with the same code.
type apiError struct {
	code, msg string
	status    int
}

func (e *apiError) Error() string                 { return e.code + ": " + e.msg }
func (e *apiError) ErrorCode() string             { return e.code }
func (e *apiError) ErrorMessage() string          { return e.msg }
func (e *apiError) ErrorFault() smithy.ErrorFault { return smithy.FaultClient }
func (e *apiError) HTTPStatusCode() int {
	if e.status == 0 {
		return 400
	}
	return e.status
}
