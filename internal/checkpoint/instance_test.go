package checkpoint_test

import (
	"context"
	"slices"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/rollback-agent/rollback-agent/internal/checkpoint"
	"github.com/rollback-agent/rollback-agent/internal/testbed"
)

// The instance rung, against moto: a new instance with the old one's
// settings, the Elastic IP moved, the old one stopped.
func TestReplaceInstanceFromAMI(t *testing.T) {
	bed := peers.Get(t)
	ctx := context.Background()
	c := bed.EC2
	inst, err := bed.NewInstance(ctx, testbed.InstanceOptions{InstanceType: "m5.large", Tags: map[string]string{"Name": "web-1", "team": "shop"}})
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close()
	sg, err := c.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("web-" + inst.Doc.InstanceID), Description: aws.String("web"), VpcId: aws.String(inst.VPCID)})
	if err != nil {
		t.Fatal(err)
	}
	kp := "key-" + inst.Doc.InstanceID
	if _, err := c.CreateKeyPair(ctx, &ec2.CreateKeyPairInput{KeyName: aws.String(kp)}); err != nil {
		t.Fatal(err)
	}
	// An old instance launched with a key and a security group.
	img, _ := c.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{inst.Doc.ImageID}})
	run, err := c.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: img.Images[0].ImageId, InstanceType: types.InstanceTypeM5Large, MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
		SubnetId: aws.String(inst.SubnetID), SecurityGroupIds: []string{aws.ToString(sg.GroupId)}, KeyName: aws.String(kp),
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeInstance, Tags: []types.Tag{{Key: aws.String("Name"), Value: aws.String("web-1")}}}}})
	if err != nil {
		t.Fatal(err)
	}
	old := aws.ToString(run.Instances[0].InstanceId)
	eip, err := c.AllocateAddress(ctx, &ec2.AllocateAddressInput{Domain: types.DomainTypeVpc})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.AssociateAddress(ctx, &ec2.AssociateAddressInput{AllocationId: eip.AllocationId, InstanceId: aws.String(old)}); err != nil {
		t.Fatal(err)
	}
	ami, err := c.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(old), Name: aws.String("web-checkpoint-" + old), NoReboot: aws.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	res, err := checkpoint.ReplaceInstance(ctx, c, checkpoint.ReplaceInstanceRequest{InstanceID: old, ImageID: aws.ToString(ami.ImageId),
		AllocationID: aws.ToString(eip.AllocationId), Progress: func(s string) { lines = append(lines, s) }})
	if err != nil {
		t.Fatal(err)
	}
	if res.NewInstanceID == "" || res.NewInstanceID == old || len(lines) < 3 {
		t.Fatalf("result %+v, progress %v", res, lines)
	}
	d, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{old, res.NewInstanceID}})
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]types.Instance{}
	for _, r := range d.Reservations {
		for _, i := range r.Instances {
			byID[aws.ToString(i.InstanceId)] = i
		}
	}
	o, n := byID[old], byID[res.NewInstanceID]
	if n.InstanceType != o.InstanceType || aws.ToString(n.SubnetId) != aws.ToString(o.SubnetId) || aws.ToString(n.KeyName) != kp ||
		aws.ToString(n.ImageId) != aws.ToString(ami.ImageId) {
		t.Errorf("new instance settings: type %s subnet %s key %s image %s", n.InstanceType, aws.ToString(n.SubnetId), aws.ToString(n.KeyName), aws.ToString(n.ImageId))
	}
	var sgs []string
	for _, g := range n.SecurityGroups {
		sgs = append(sgs, aws.ToString(g.GroupId))
	}
	if !slices.Contains(sgs, aws.ToString(sg.GroupId)) {
		t.Errorf("security groups %v lack %s", sgs, aws.ToString(sg.GroupId))
	}
	tags := tagsOf(n.Tags)
	if tags["Name"] != "web-1" || tags[checkpoint.TagPrefix+"replaces"] != old {
		t.Errorf("new instance tags %v", tags)
	}
	if o.State.Name != types.InstanceStateNameStopped && o.State.Name != types.InstanceStateNameStopping {
		t.Errorf("old instance is %s, want stopped (never terminated)", o.State.Name)
	}
	addr, err := c.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{AllocationIds: []string{aws.ToString(eip.AllocationId)}})
	if err != nil || len(addr.Addresses) != 1 || aws.ToString(addr.Addresses[0].InstanceId) != res.NewInstanceID {
		t.Errorf("the Elastic IP is on %v, want %s (%v)", addr, res.NewInstanceID, err)
	}
}
