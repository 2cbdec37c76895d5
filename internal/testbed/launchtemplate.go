package testbed

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// templateData reads one version of a launch template from moto: version
// as RunInstances takes it (a number, $Latest, or empty/$Default).
func (s *sim) templateData(ctx context.Context, id, name, version string) (*types.ResponseLaunchTemplateData, error) {
	in := &ec2.DescribeLaunchTemplateVersionsInput{}
	if id != "" {
		in.LaunchTemplateId = aws.String(id)
	} else {
		in.LaunchTemplateName = aws.String(name)
	}
	out, err := s.moto.DescribeLaunchTemplateVersions(ctx, in)
	if err != nil {
		return nil, err
	}
	var pick *types.LaunchTemplateVersion
	var latest int64
	for i := range out.LaunchTemplateVersions {
		v := &out.LaunchTemplateVersions[i]
		n := aws.ToInt64(v.VersionNumber)
		switch {
		case version == "" || version == "$Default":
			if aws.ToBool(v.DefaultVersion) {
				pick = v
			}
		case version == "$Latest":
			if n > latest {
				pick, latest = v, n
			}
		case version == strconv.FormatInt(n, 10):
			pick = v
		}
	}
	if pick == nil || pick.LaunchTemplateData == nil {
		return nil, fmt.Errorf("launch template %s%s has no version %q", id, name, version)
	}
	return pick.LaunchTemplateData, nil
}

// mergeTemplate adds a template's IamInstanceProfile and MetadataOptions
// to a RunInstances form where the form has none of them (moto applies the
// template's mappings itself); it reports whether it changed the form.
func mergeTemplate(f url.Values, d *types.ResponseLaunchTemplateData) bool {
	has := func(prefix string) bool {
		for k := range f {
			if strings.HasPrefix(k, prefix) {
				return true
			}
		}
		return false
	}
	changed := false
	set := func(k, v string) {
		if v != "" {
			f.Set(k, v)
			changed = true
		}
	}
	if p := d.IamInstanceProfile; p != nil && !has("IamInstanceProfile.") {
		if arn := aws.ToString(p.Arn); arn != "" {
			set("IamInstanceProfile.Arn", arn)
		} else {
			set("IamInstanceProfile.Name", aws.ToString(p.Name))
		}
	}
	if mo := d.MetadataOptions; mo != nil && !has("MetadataOptions.") {
		set("MetadataOptions.HttpTokens", string(mo.HttpTokens))
		set("MetadataOptions.HttpEndpoint", string(mo.HttpEndpoint))
		if mo.HttpPutResponseHopLimit != nil {
			set("MetadataOptions.HttpPutResponseHopLimit", strconv.Itoa(int(*mo.HttpPutResponseHopLimit)))
		}
	}
	return changed
}
