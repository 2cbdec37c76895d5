package checkpoint

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// ReplaceInstanceRequest asks for the last rung, from a workstation: a new
// instance from an AMI in place of the old one.
type ReplaceInstanceRequest struct {
	InstanceID   string
	ImageID      string
	AllocationID string // Elastic IP to move; empty: none
	// Wait bounds the waits for the new instance (default 10 minutes).
	Wait time.Duration
	// Progress receives a line per step (may be nil).
	Progress func(string)
}

// ReplaceInstanceResult says what changed.
type ReplaceInstanceResult struct {
	OldInstanceID string `json:"old_instance_id"`
	NewInstanceID string `json:"new_instance_id"`
	OldPrivateIP  string `json:"old_private_ip"`
	NewPrivateIP  string `json:"new_private_ip"`
	PublicIP      string `json:"public_ip,omitempty"`
	AllocationID  string `json:"allocation_id,omitempty"`
	OldState      string `json:"old_state"`
}

// ReplaceInstance launches a new instance from the image with the old
// instance's type, subnet, security groups, key, instance profile,
// metadata options and tags; waits until it runs and its status checks
// pass; moves the Elastic IP to it; and stops (never terminates) the old
// one, which stays as the way back.
func ReplaceInstance(ctx context.Context, c *ec2.Client, req ReplaceInstanceRequest) (*ReplaceInstanceResult, error) {
	say := req.Progress
	if say == nil {
		say = func(string) {}
	}
	if req.Wait == 0 {
		req.Wait = 10 * time.Minute
	}
	desc, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{req.InstanceID}})
	if err != nil {
		return nil, fmt.Errorf("restore-instance: DescribeInstances %s: %w", req.InstanceID, err)
	}
	if len(desc.Reservations) == 0 || len(desc.Reservations[0].Instances) == 0 {
		return nil, fmt.Errorf("restore-instance: instance %s not found", req.InstanceID)
	}
	old := desc.Reservations[0].Instances[0]
	res := &ReplaceInstanceResult{OldInstanceID: req.InstanceID, OldPrivateIP: aws.ToString(old.PrivateIpAddress), AllocationID: req.AllocationID}
	in := &ec2.RunInstancesInput{
		ImageId: aws.String(req.ImageID), InstanceType: old.InstanceType, MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
		SubnetId: old.SubnetId, KeyName: old.KeyName, EbsOptimized: old.EbsOptimized,
		// One token per run: the SDK's retries of this call send it again,
		// so a lost answer launches no second instance, while a second
		// run of restore-instance (the first one's instance failed, or
		// was terminated) launches a new one. A token made from the
		// instance and image alone would get the first launch back for
		// as long as EC2 keeps the token.
		ClientToken: aws.String(clientToken("restore-instance", req.InstanceID, req.ImageID, NewID())),
	}
	for _, sg := range old.SecurityGroups {
		in.SecurityGroupIds = append(in.SecurityGroupIds, aws.ToString(sg.GroupId))
	}
	if old.IamInstanceProfile != nil && old.IamInstanceProfile.Arn != nil {
		in.IamInstanceProfile = &types.IamInstanceProfileSpecification{Arn: old.IamInstanceProfile.Arn}
	}
	if mo := old.MetadataOptions; mo != nil {
		in.MetadataOptions = &types.InstanceMetadataOptionsRequest{HttpTokens: mo.HttpTokens, HttpEndpoint: mo.HttpEndpoint, HttpPutResponseHopLimit: mo.HttpPutResponseHopLimit}
	}
	var tags []types.Tag
	for _, t := range old.Tags {
		if k := aws.ToString(t.Key); !strings.HasPrefix(strings.ToLower(k), "aws:") && !strings.HasPrefix(k, TagRestoreIntent) {
			tags = append(tags, t)
		}
	}
	// The instance's own tags come first (cost allocation, automation
	// find it by them); the agent's note of what it replaces fits only
	// below EC2's 50 tags per resource.
	if len(tags) < MaxTags {
		tags = append(tags, types.Tag{Key: aws.String(TagPrefix + "replaces"), Value: aws.String(req.InstanceID)})
	} else {
		say(fmt.Sprintf("%s has %d tags, EC2's limit: the new instance gets them, without the tag %s", req.InstanceID, len(tags), TagPrefix+"replaces"))
	}
	in.TagSpecifications = []types.TagSpecification{{ResourceType: types.ResourceTypeInstance, Tags: tags}}
	say(fmt.Sprintf("launching from %s: type %s, subnet %s, security groups %v", req.ImageID, old.InstanceType, aws.ToString(old.SubnetId), in.SecurityGroupIds))
	run, err := c.RunInstances(ctx, in)
	if err != nil {
		return nil, fmt.Errorf("restore-instance: RunInstances from %s: %w", req.ImageID, err)
	}
	newID := aws.ToString(run.Instances[0].InstanceId)
	res.NewInstanceID = newID
	say("waiting for " + newID + " to run and pass its status checks")
	if err := ec2.NewInstanceRunningWaiter(c, func(o *ec2.InstanceRunningWaiterOptions) { o.MinDelay = time.Second }).
		Wait(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{newID}}, req.Wait); err != nil {
		return res, fmt.Errorf("restore-instance: %s did not start running: %w", newID, err)
	}
	if err := ec2.NewInstanceStatusOkWaiter(c, func(o *ec2.InstanceStatusOkWaiterOptions) { o.MinDelay = time.Second }).
		Wait(ctx, &ec2.DescribeInstanceStatusInput{InstanceIds: []string{newID}}, req.Wait); err != nil {
		return res, fmt.Errorf("restore-instance: %s runs but its status checks did not pass: %w (the old instance was left running)", newID, err)
	}
	if req.AllocationID != "" {
		say("moving Elastic IP " + req.AllocationID + " to " + newID)
		if _, err := c.AssociateAddress(ctx, &ec2.AssociateAddressInput{AllocationId: aws.String(req.AllocationID), InstanceId: aws.String(newID), AllowReassociation: aws.Bool(true)}); err != nil {
			return res, fmt.Errorf("restore-instance: AssociateAddress %s to %s: %w (the old instance was left running)", req.AllocationID, newID, err)
		}
	}
	say("stopping " + req.InstanceID + " (not terminating it: it is the way back)")
	stop, err := c.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{req.InstanceID}})
	if err != nil {
		return res, fmt.Errorf("restore-instance: StopInstances %s: %w", req.InstanceID, err)
	}
	if len(stop.StoppingInstances) > 0 && stop.StoppingInstances[0].CurrentState != nil {
		res.OldState = string(stop.StoppingInstances[0].CurrentState.Name)
	}
	now, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{newID}})
	if err == nil && len(now.Reservations) > 0 && len(now.Reservations[0].Instances) > 0 {
		ni := now.Reservations[0].Instances[0]
		res.NewPrivateIP, res.PublicIP = aws.ToString(ni.PrivateIpAddress), aws.ToString(ni.PublicIpAddress)
	}
	return res, nil
}
