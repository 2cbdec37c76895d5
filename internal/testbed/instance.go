package testbed

import (
	"context"
	"fmt"
	"os"
	"sort"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// Device names of the scenario's volumes.
const (
	RootDevice = "/dev/xvda"
	DataDevice = "/dev/sdf"
)

// Instance is an EC2 instance in moto with a root and a data volume, and
// an IMDS mock (IMDSv2 only) that claims to be it, behind its own proxy so
// tests can turn IMDS "off" (403) or make it slow.
type Instance struct {
	Doc          InstanceDoc
	VPCID        string
	SubnetID     string
	RootVolumeID string
	DataVolumeID string
	IMDS         *IMDS
	IMDSProxy    *Proxy
	// ByIDDir holds the by-id links of the instance's volumes (the
	// agent's by_id_dir) when the instance has a data plane.
	ByIDDir string
	// Profile is the role session of the instance's profile (launched
	// from a template that names one); its IMDS serves the credentials
	// and Env leaves the static ones out, so the SDK takes them from IMDS.
	Profile *Principal
	bed     *Bed
	plane   *instPlane // nil without a data plane
}

// InstanceOptions shape NewInstance.
type InstanceOptions struct {
	AvailabilityZone string // default us-east-1a
	InstanceType     string // default t3.micro
	RootGiB, DataGiB int32  // default 8 and 2
	Tags             map[string]string
	// DataPlane backs the root and data volumes with ext4 images on loop
	// devices and by-id links in Instance.ByIDDir; the proxy then plays
	// EBS's data plane for them (snapshots copy the images, and so on).
	DataPlane bool
	// ImageMiB is the size of each volume's image (default 64), whatever
	// the volume's size in GiB.
	ImageMiB int
	// LaunchTemplateID launches from a launch template (its image, type,
	// instance profile, metadata options and tags) through the AWS proxy,
	// which applies what moto leaves out of a template (motogaps.go).
	LaunchTemplateID string
}

// NewInstance creates a VPC, a subnet and an instance with a root volume
// and one data volume in moto, and starts an IMDS mock for it.
func (b *Bed) NewInstance(ctx context.Context, o InstanceOptions) (*Instance, error) {
	if o.AvailabilityZone == "" {
		o.AvailabilityZone = Region + "a"
	}
	if o.InstanceType == "" {
		o.InstanceType = "t3.micro"
	}
	if o.RootGiB == 0 {
		o.RootGiB = 8
	}
	if o.DataGiB == 0 {
		o.DataGiB = 2
	}
	c := b.EC2
	vpc, err := c.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String("10.0.0.0/16")})
	if err != nil {
		return nil, wrap("CreateVpc", err)
	}
	sub, err := c.CreateSubnet(ctx, &ec2.CreateSubnetInput{
		VpcId: vpc.Vpc.VpcId, CidrBlock: aws.String("10.0.1.0/24"), AvailabilityZone: aws.String(o.AvailabilityZone),
	})
	if err != nil {
		return nil, wrap("CreateSubnet", err)
	}
	imgs, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{
		Owners:  []string{"amazon"},
		Filters: []types.Filter{{Name: aws.String("name"), Values: []string{"amzn2-ami-hvm-*-x86_64-gp2"}}},
	})
	if err != nil || len(imgs.Images) == 0 {
		return nil, wrap("DescribeImages (amzn2)", fmt.Errorf("no image: %v", err))
	}
	sort.Slice(imgs.Images, func(i, j int) bool {
		return aws.ToString(imgs.Images[i].ImageId) < aws.ToString(imgs.Images[j].ImageId)
	})
	image := aws.ToString(imgs.Images[0].ImageId)
	var tags []types.Tag
	for k, v := range o.Tags {
		tags = append(tags, types.Tag{Key: aws.String(k), Value: aws.String(v)})
	}
	in := &ec2.RunInstancesInput{
		ImageId: aws.String(image), InstanceType: types.InstanceType(o.InstanceType),
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1), SubnetId: sub.Subnet.SubnetId,
		BlockDeviceMappings: []types.BlockDeviceMapping{
			{DeviceName: aws.String(RootDevice), Ebs: &types.EbsBlockDevice{VolumeSize: aws.Int32(o.RootGiB), VolumeType: types.VolumeTypeGp3, DeleteOnTermination: aws.Bool(true)}},
			{DeviceName: aws.String(DataDevice), Ebs: &types.EbsBlockDevice{VolumeSize: aws.Int32(o.DataGiB), VolumeType: types.VolumeTypeGp3, DeleteOnTermination: aws.Bool(false)}},
		},
	}
	if len(tags) > 0 {
		in.TagSpecifications = []types.TagSpecification{{ResourceType: types.ResourceTypeInstance, Tags: tags}}
	}
	// The IMDS mock answers IMDSv2 only: EC2's record of the instance says
	// so too, as for an AMI marked ImdsSupport v2.0 (HttpTokens required,
	// hop limit 2).
	in.MetadataOptions = &types.InstanceMetadataOptionsRequest{HttpTokens: types.HttpTokensStateRequired, HttpPutResponseHopLimit: aws.Int32(2), HttpEndpoint: types.InstanceMetadataEndpointStateEnabled}
	launcher := c
	if o.LaunchTemplateID != "" {
		in.MetadataOptions = nil // the template's
		in.LaunchTemplate = &types.LaunchTemplateSpecification{LaunchTemplateId: aws.String(o.LaunchTemplateID)}
		in.ImageId, in.InstanceType = nil, ""
		launcher = ec2.New(ec2.Options{Region: Region, BaseEndpoint: aws.String(b.AWS.URL), Credentials: b.credentials()})
	}
	run, err := launcher.RunInstances(ctx, in)
	if err != nil {
		return nil, wrap("RunInstances", err)
	}
	inst := run.Instances[0]
	owner := aws.ToString(run.OwnerId)
	image, o.InstanceType = aws.ToString(inst.ImageId), string(inst.InstanceType)
	i := &Instance{
		VPCID: aws.ToString(vpc.Vpc.VpcId), SubnetID: aws.ToString(sub.Subnet.SubnetId), bed: b,
		Doc: InstanceDoc{
			InstanceID: aws.ToString(inst.InstanceId), Region: Region, AvailabilityZone: o.AvailabilityZone,
			AccountID: owner, InstanceType: o.InstanceType, ImageID: image, PrivateIP: aws.ToString(inst.PrivateIpAddress),
		},
	}
	for _, m := range inst.BlockDeviceMappings {
		switch aws.ToString(m.DeviceName) {
		case RootDevice:
			i.RootVolumeID = aws.ToString(m.Ebs.VolumeId)
		case DataDevice:
			i.DataVolumeID = aws.ToString(m.Ebs.VolumeId)
		}
	}
	if i.RootVolumeID == "" || i.DataVolumeID == "" {
		return nil, wrap("RunInstances", fmt.Errorf("moto returned mappings %+v without both volumes", inst.BlockDeviceMappings))
	}
	if o.DataPlane {
		if o.ImageMiB <= 0 {
			o.ImageMiB = 64
		}
		if err := b.sim.dp.addInstance(i, int64(o.ImageMiB), i.RootVolumeID, i.DataVolumeID); err != nil {
			i.Close()
			return nil, err
		}
	}
	var imdsOpts IMDSOptions
	if inst.IamInstanceProfile == nil {
		// RunInstances answers before the profile is associated; ask again.
		if d, err := b.sim.describeInstance(ctx, i.Doc.InstanceID); err == nil {
			inst.IamInstanceProfile = d.IamInstanceProfile
		}
	}
	if inst.IamInstanceProfile != nil {
		p, pc, err := b.profileCredentials(ctx, inst)
		if err != nil {
			i.Close()
			return nil, err
		}
		i.Profile, imdsOpts.Profile = p, pc
	}
	i.IMDS, err = StartIMDSWith(ctx, i.Doc, imdsOpts)
	if err != nil {
		i.Close()
		return nil, err
	}
	i.IMDSProxy, err = StartProxy("imds", i.IMDS.URL)
	if err != nil {
		i.Close()
		return nil, err
	}
	b.mu.Lock()
	b.instances = append(b.instances, i)
	b.mu.Unlock()
	return i, nil
}

// Env is the environment for an agent running "on" this instance: AWS
// through the proxy, IMDS through its proxy, credentials and the region
// (the agent takes its region from IMDS; the variable is for tools).
func (i *Instance) Env() []string {
	env := i.bed.BaseEnv()
	if i.Profile != nil {
		env = withoutCredentials(env)
	}
	return append(env, "AWS_EC2_METADATA_SERVICE_ENDPOINT="+i.IMDSProxy.URL, "AWS_REGION="+Region)
}

// Close stops the instance's IMDS mock and its proxy and, with a data
// plane, unmounts its volumes (whoever mounted them), frees its loop
// devices and removes ByIDDir. It may be called more than once.
func (i *Instance) Close() {
	if i.IMDSProxy != nil {
		i.IMDSProxy.Stop()
	}
	if i.IMDS != nil {
		i.IMDS.Stop()
	}
	if err := i.bed.sim.dp.closeInstance(i); err != nil {
		// No error return to carry it, and a leaked mount or loop device
		// must not go unnoticed.
		fmt.Fprintf(os.Stderr, "testbed: cleanup of instance %s: %v\n", i.Doc.InstanceID, err)
	}
}
