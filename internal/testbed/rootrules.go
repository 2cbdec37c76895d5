package testbed

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// What EC2 refuses in a root volume replacement. EC2 User Guide, "Replace
// the root volume for an Amazon EC2 instance without stopping it",
// Considerations (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/replace-root.html):
// the instance must have an EBS root (not instance store); bare-metal
// instances are not supported (Mac instances only with the launch state
// or a snapshot, not an AMI); an AMI must not be an AWS Marketplace AMI
// and its root volume must be at least as large as the instance's current
// root volume. AWS documents no error codes for these; the bed answers
// InvalidParameterValue (the AMI) and UnsupportedOperation (the instance).

// imageFlag is what the bed adds to an image.
type imageFlag struct {
	productCode string // an AWS Marketplace product code
}

// MarkMarketplace gives imageID an AWS Marketplace product code, as
// DescribeImages shows for a Marketplace AMI; images made from instances
// launched from it inherit the code.
func (b *Bed) MarkMarketplace(imageID, productCode string) {
	b.sim.mu.Lock()
	b.sim.imageFlags[imageID] = imageFlag{productCode: productCode}
	b.sim.mu.Unlock()
}

// marketplaceCode is imageID's Marketplace product code, "" for none.
func (s *sim) marketplaceCode(imageID string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.imageFlags[imageID].productCode
}

// inheritFlags gives an image made from an instance the product code of
// the image the instance was launched from.
func (s *sim) inheritFlags(imageID, launchImage string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f, ok := s.imageFlags[launchImage]; ok {
		s.imageFlags[imageID] = f
	}
}

// describeProductCodes puts the bed's product code into an <item> of
// DescribeImages' imagesSet.
func (s *sim) describeProductCodes(it *xnode, imageID string) {
	code := s.marketplaceCode(imageID)
	if code == "" {
		return
	}
	it.replace(elem("productCodes", elem("item", leaf("productCode", code), leaf("type", "marketplace"))))
}

// rootReplaceRefusal is EC2's refusal of a replacement of inst's root
// (whose volume is old) by t's source, nil when EC2 accepts it.
func (s *sim) rootReplaceRefusal(ctx context.Context, t *rootTask, inst types.Instance, old types.Volume) *reply {
	itype := string(inst.InstanceType)
	switch {
	case inst.RootDeviceType == types.DeviceTypeInstanceStore:
		return ec2Error(http.StatusBadRequest, "UnsupportedOperation",
			fmt.Sprintf("The instance '%s' has an instance store root volume, which cannot be replaced.", t.instanceID))
	case strings.HasSuffix(itype, ".metal") && !strings.HasPrefix(itype, "mac"):
		return ec2Error(http.StatusBadRequest, "UnsupportedOperation",
			fmt.Sprintf("Root volume replacement is not supported for bare metal instance type %s.", itype))
	case t.imageID == "":
		return nil
	case strings.HasPrefix(itype, "mac"):
		return ec2Error(http.StatusBadRequest, "UnsupportedOperation",
			fmt.Sprintf("Root volume replacement from an AMI is not supported for instance type %s.", itype))
	}
	if code := s.marketplaceCode(t.imageID); code != "" {
		return ec2Error(http.StatusBadRequest, "InvalidParameterValue",
			fmt.Sprintf("The AMI '%s' is an AWS Marketplace AMI (product code %s): it cannot replace a root volume.", t.imageID, code))
	}
	root, err := s.imageRoot(ctx, t.imageID)
	if err != nil {
		return errorReply("DescribeImages "+t.imageID, err)
	}
	if size, cur := root.Size, aws.ToInt32(old.Size); size < cur {
		return ec2Error(http.StatusBadRequest, "InvalidParameterValue",
			fmt.Sprintf("The root volume of AMI '%s' (%d GiB) is smaller than the instance's current root volume %s (%d GiB).", t.imageID, size, t.oldVol, cur))
	}
	return nil
}

// imageRoot is an image's root mapping: the bed's faithful record of
// images made through it, else moto's.
func (s *sim) imageRoot(ctx context.Context, imageID string) (imageMapping, error) {
	s.mu.Lock()
	rec := s.images[imageID]
	s.mu.Unlock()
	if rec != nil {
		for _, m := range rec.mappings {
			if m.Device == rec.rootDevice {
				return m, nil
			}
		}
	}
	out, err := s.moto.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{imageID}})
	if err != nil {
		return imageMapping{}, err
	}
	for _, im := range out.Images {
		for _, m := range im.BlockDeviceMappings {
			if aws.ToString(m.DeviceName) == aws.ToString(im.RootDeviceName) && m.Ebs != nil {
				return imageMapping{Device: aws.ToString(m.DeviceName), SnapshotID: aws.ToString(m.Ebs.SnapshotId), Size: aws.ToInt32(m.Ebs.VolumeSize)}, nil
			}
		}
	}
	return imageMapping{}, &apiError{code: "InvalidAMIID.NotFound", msg: fmt.Sprintf("The image id '[%s]' has no EBS root", imageID)}
}
