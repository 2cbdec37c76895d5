package testbed

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"

	"github.com/aws/aws-sdk-go-v2/service/codedeploy"
)

// serviceRoute is one non-EC2 action the proxy changes, listed with the
// gap in moto 5.2.1 that makes it necessary (pinned by s3gaps_test.go).
type serviceRoute struct {
	Service, Action string
	Gap             string
	Patch           string
	Hooks           *hooks
}

// serviceRoutes is the table of what the proxy does to calls of services
// other than EC2.
//
// Checked and found fine in moto 5.2.1, so not patched: S3 GetObject with
// If-None-Match answers 304 with an empty body (the release channel's
// conditional poll); multipart uploads (CreateMultipartUpload, UploadPart
// with the SDK's CRC32 trailing checksums, CompleteMultipartUpload);
// PutObject with If-None-Match: * and If-Match answers 412
// PreconditionFailed when the condition fails. CodeDeploy CreateDeployment
// keeps autoRollbackConfiguration and overrideAlarmConfiguration, and
// GetDeployment returns both.
func (s *sim) serviceRoutes() []serviceRoute {
	return []serviceRoute{
		{"codedeploy", "RegisterApplicationRevision",
			"answers HTTP 500 (NotImplementedError: register_application_revision)",
			"the proxy answers it: the application must exist in moto (ApplicationDoesNotExistException otherwise) and the revision must name an S3 bundle (InvalidRevisionException otherwise), as CodeDeploy checks; nothing is stored, as moto has no revision registry to put it in",
			&hooks{Answer: s.registerApplicationRevision}},
	}
}

// serviceGap returns the hooks of a non-EC2 operation, nil for none.
func (s *sim) serviceGap(op Op) *hooks {
	for _, r := range s.serviceRoutes() {
		if r.Service == op.Service && r.Action == op.Action {
			return compose(s.s3Rules(op), r.Hooks)
		}
	}
	return s.s3Rules(op)
}

func jsonError(status int, code, msg string) *reply {
	b, _ := json.Marshal(map[string]string{"__type": code, "message": msg})
	return &reply{Status: status, Header: http.Header{"Content-Type": {"application/x-amz-json-1.1"}}, Body: b}
}

func (s *sim) registerApplicationRevision(c *call) *reply {
	var in struct {
		ApplicationName string `json:"applicationName"`
		Revision        struct {
			RevisionType string `json:"revisionType"`
			S3Location   *struct {
				Bucket, Key, BundleType string
			} `json:"s3Location"`
		} `json:"revision"`
	}
	if err := json.Unmarshal(c.Body, &in); err != nil {
		return jsonError(http.StatusBadRequest, "SerializationException", err.Error())
	}
	loc := in.Revision.S3Location
	if in.Revision.RevisionType != "S3" || loc == nil || loc.Bucket == "" || loc.Key == "" || loc.BundleType == "" {
		return jsonError(http.StatusBadRequest, "InvalidRevisionException", "the revision must be an S3 location with bucket, key and bundleType")
	}
	o := s.moto.Options()
	cd := codedeploy.New(codedeploy.Options{Region: o.Region, BaseEndpoint: o.BaseEndpoint, Credentials: o.Credentials})
	// ListApplications, not GetApplication: moto writes createTime as a
	// string, which the SDK refuses to decode.
	found := false
	p := codedeploy.NewListApplicationsPaginator(cd, &codedeploy.ListApplicationsInput{})
	for p.HasMorePages() && !found {
		page, err := p.NextPage(c.Ctx)
		if err != nil {
			return jsonError(http.StatusInternalServerError, "InternalError", "testbed proxy: ListApplications: "+err.Error())
		}
		found = slices.Contains(page.Applications, in.ApplicationName)
	}
	if !found {
		return jsonError(http.StatusBadRequest, "ApplicationDoesNotExistException", fmt.Sprintf("No application found for name: %s", in.ApplicationName))
	}
	return &reply{Status: http.StatusOK, Header: http.Header{"Content-Type": {"application/x-amz-json-1.1"}}, Body: []byte("{}")}
}
