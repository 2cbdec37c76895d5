package doctor

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/aws/smithy-go"

	"github.com/rollback-agent/rollback-agent/internal/api"
)

// A denial names the grant AWS names, in the message shape of EC2's
// UnauthorizedOperation and S3's and CloudWatch's AccessDenied; without
// that text, the call's own action.
func TestMissingGrant(t *testing.T) {
	ec2 := &smithy.GenericAPIError{Code: "UnauthorizedOperation", Message: "You are not authorized to perform this operation. User: arn:aws:sts::123456789012:assumed-role/r/i-1 is not authorized to perform: ec2:CreateTags on resource: arn:aws:ec2:us-east-1::snapshot/* because no identity-based policy allows the ec2:CreateTags action. Encoded authorization failure message: abc"}
	wrapped := fmt.Errorf("checkpoint: %w", ec2)
	if !denied(wrapped) || missingGrant(wrapped, "ec2:CreateSnapshots") != "ec2:CreateTags on arn:aws:ec2:us-east-1::snapshot/*" {
		t.Errorf("denied %v, grant %q", denied(wrapped), missingGrant(wrapped, "ec2:CreateSnapshots"))
	}
	bare := &smithy.GenericAPIError{Code: "AccessDenied", Message: "Access Denied"}
	if !denied(bare) || missingGrant(bare, "s3:GetObject") != "s3:GetObject" {
		t.Errorf("a bare AccessDenied: %v %q", denied(bare), missingGrant(bare, "s3:GetObject"))
	}
	if denied(errors.New("connection refused")) || denied(&smithy.GenericAPIError{Code: "InvalidVolume.NotFound"}) {
		t.Error("not a denial, taken for one")
	}
}

func TestPendingLimit(t *testing.T) {
	for vt, want := range map[string]int{"gp3": 5, "gp2": 5, "io2": 5, "st1": 1, "sc1": 1} {
		if got := pendingLimit(vt); got != want {
			t.Errorf("pendingLimit(%s) = %d, want %d", vt, got, want)
		}
	}
}

// A device sysfs does not know is an error, not an empty layout.
func TestBlockLayoutOfAnUnknownDevice(t *testing.T) {
	if _, err := blockLayout("/sys/class/block", "/dev/no-such-device"); err == nil {
		t.Error("no error for a device sysfs does not have")
	}
}

// The agent's record is the doctor's first check: a damaged or lost
// journal fails it with the operator's next step as the fix.
func TestRecordCheck(t *testing.T) {
	r := &report{in: Inputs{JournalPath: "/var/lib/rollback-agent/journal.db"}}
	r.record()
	if len(r.checks) != 1 || r.checks[0].Result != api.DoctorOK {
		t.Fatalf("healthy record: %+v", r.checks)
	}
	r = &report{in: Inputs{JournalPath: "/var/lib/rollback-agent/journal.db",
		Record: &api.OperatorAttention{Trouble: "journal-damaged", What: "page 9 is invalid", Next: "run `agentctl recover journal`"}}}
	r.record()
	c := r.checks[0]
	if c.Result != api.DoctorFail || !strings.Contains(c.Detail, "journal-damaged") || !strings.Contains(c.Detail, "page 9") || !strings.Contains(c.Fix, "agentctl recover journal") {
		t.Fatalf("damaged record: %+v", c)
	}
}
