package testbed

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// IMDSMockVersion is the pinned ec2-metadata-mock the Makefile installs.
const IMDSMockVersion = "v1.13.0"

// InstanceDoc is what the IMDS mock tells the agent about "its" instance.
type InstanceDoc struct {
	InstanceID       string
	Region           string
	AvailabilityZone string
	AccountID        string
	InstanceType     string
	ImageID          string
	PrivateIP        string
}

// IMDS is a running ec2-metadata-mock in IMDSv2-only mode.
type IMDS struct {
	URL  string
	proc *process
	dir  string
}

// IMDSOptions shape StartIMDSWith.
type IMDSOptions struct {
	// AllowV1 runs the mock without -I, so unauthenticated IMDSv1 GETs
	// work too: used to prove the agent never falls back to them.
	AllowV1 bool
	// Profile, when set, is served as EC2 serves an instance profile:
	// iam/info and iam/security-credentials/ROLE.
	Profile *ProfileCredentials
}

// ProfileCredentials are an instance profile's role credentials as IMDS
// serves them.
type ProfileCredentials struct {
	ProfileARN, ProfileID, Role string
	Creds                       aws.Credentials
}

// StartIMDS starts AWS's ec2-metadata-mock (-I: IMDSv2 only) serving doc.
func StartIMDS(ctx context.Context, doc InstanceDoc) (*IMDS, error) {
	return StartIMDSWith(ctx, doc, IMDSOptions{})
}

// StartIMDSWith starts the mock with options.
func StartIMDSWith(ctx context.Context, doc InstanceDoc, o IMDSOptions) (*IMDS, error) {
	bin, err := findTool("ec2-metadata-mock", "EC2_METADATA_MOCK",
		"run `make tools` (go install github.com/aws/amazon-ec2-metadata-mock/cmd/ec2-metadata-mock@"+IMDSMockVersion+" into ./bin)")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "testbed-imds-")
	if err != nil {
		return nil, err
	}
	cfg := map[string]any{
		"metadata": map[string]any{"values": map[string]any{
			"instance-id":                 doc.InstanceID,
			"instance-type":               doc.InstanceType,
			"ami-id":                      doc.ImageID,
			"local-ipv4":                  doc.PrivateIP,
			"placement-availability-zone": doc.AvailabilityZone,
			"placement-region":            doc.Region,
		}},
		"dynamic": map[string]any{"values": map[string]any{
			"instance-identity-document": map[string]any{
				"accountId":        doc.AccountID,
				"architecture":     "x86_64",
				"availabilityZone": doc.AvailabilityZone,
				"imageId":          doc.ImageID,
				"instanceId":       doc.InstanceID,
				"instanceType":     doc.InstanceType,
				"pendingTime":      time.Now().UTC().Format(time.RFC3339),
				"privateIp":        doc.PrivateIP,
				"region":           doc.Region,
				"version":          "2017-09-30",
			},
		}},
	}
	if pc := o.Profile; pc != nil {
		md := cfg["metadata"].(map[string]any)
		md["paths"] = map[string]any{"iam-security-credentials": "/latest/meta-data/iam/security-credentials/" + pc.Role}
		vals := md["values"].(map[string]any)
		now := time.Now().UTC().Format(time.RFC3339)
		vals["iam-info"] = map[string]any{"Code": "Success", "LastUpdated": now, "InstanceProfileArn": pc.ProfileARN, "InstanceProfileId": pc.ProfileID}
		vals["iam-security-credentials-role"] = pc.Role
		vals["iam-security-credentials"] = map[string]any{
			"Code": "Success", "LastUpdated": now, "Type": "AWS-HMAC",
			"AccessKeyId": pc.Creds.AccessKeyID, "SecretAccessKey": pc.Creds.SecretAccessKey, "Token": pc.Creds.SessionToken,
			"Expiration": pc.Creds.Expires.UTC().Format(time.RFC3339),
		}
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	cfgPath := filepath.Join(dir, "aemm-config.json")
	if err := os.WriteFile(cfgPath, b, 0o644); err != nil {
		return nil, err
	}
	var lastErr error
	for range 3 {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		// HOME points at the temp dir: the mock looks for $HOME/aemm-config.json.
		env := append(os.Environ(), "HOME="+dir)
		args := []string{"-n", "127.0.0.1", "-p", itoa(port), "-c", cfgPath}
		if !o.AllowV1 {
			args = append([]string{"-I"}, args...)
		}
		p, err := startProcess("ec2-metadata-mock", bin, args, env, dir)
		if err != nil {
			return nil, err
		}
		m := &IMDS{URL: fmt.Sprintf("http://127.0.0.1:%d", port), proc: p, dir: dir}
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		lastErr = waitHTTP(wctx, p, func(hc *http.Client) error {
			_, err := m.get(hc, "/latest/meta-data/instance-id")
			return err
		})
		cancel()
		if lastErr == nil {
			return m, nil
		}
		p.stop()
	}
	return nil, lastErr
}

// get reads a path the IMDSv2 way: a token first, then the data.
func (m *IMDS) get(hc *http.Client, path string) (string, error) {
	req, _ := http.NewRequest(http.MethodPut, m.URL+"/latest/api/token", nil)
	req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "60")
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	tok := readAll(resp)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("token: HTTP %d", resp.StatusCode)
	}
	req, _ = http.NewRequest(http.MethodGet, m.URL+path, nil)
	req.Header.Set("X-aws-ec2-metadata-token", tok)
	resp, err = hc.Do(req)
	if err != nil {
		return "", err
	}
	body := readAll(resp)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: HTTP %d", path, resp.StatusCode)
	}
	return body, nil
}

// Stop ends the mock.
func (m *IMDS) Stop() {
	m.proc.stop()
	os.RemoveAll(m.dir)
}

// Output is what the mock printed.
func (m *IMDS) Output() string { return m.proc.Output() }
