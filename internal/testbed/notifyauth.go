package testbed

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/testbed/iamauth"
)

// The authorisations of the calls the agent makes to tell the world:
// sns:Publish on the topic, events:PutEvents on the bus (with
// events:source and events:detail-type, EventBridge User Guide, "Using
// IAM policy conditions"), and s3:PutObject of its host document, whose
// key IAM scopes with ${aws:userid}. moto 5.2.1 checks SNS and
// EventBridge actions against the resource "*" only (so a statement
// scoped to the topic never matches there) and substitutes no policy
// variable in an S3 resource (so ${aws:userid} never matches): the bed
// decides these itself, with the caller's context keys (aws:userid is
// ROLE-ID:SESSION for an assumed role, the user's unique id for a user:
// IAM User Guide, "IAM policy elements: Variables and tags"), and passes
// what it allowed to moto signed as its administrator.

// decidedHeader marks an S3 request the bed decided, for sign: moto must
// then see the administrator's signature, not the caller's.
const decidedHeader = "X-Testbed-Decided"

// globalContext is what every request of p carries.
func globalContext(p *Principal) map[string][]string {
	c := map[string][]string{"aws:RequestedRegion": {Region}, "aws:PrincipalArn": {p.ARN}}
	if p.UserID != "" {
		c["aws:userid"] = []string{p.UserID}
	}
	if p.SourceInstance != "" {
		c["ec2:SourceInstanceARN"] = []string{p.SourceInstance}
	}
	return c
}

// snsRequests: sns:Publish on the topic (or the target) it names.
func (e *enforcer) snsRequests(p *Principal, action string, f url.Values) ([]iamauth.Request, error) {
	if action != "Publish" {
		return nil, fmt.Errorf("the test bed has no authorisation model for sns:%s (add it to notifyauth.go)", action)
	}
	arn := f.Get("TopicArn")
	if arn == "" {
		arn = f.Get("TargetArn")
	}
	return []iamauth.Request{{Action: "sns:Publish", Resource: arn, Context: globalContext(p)}}, nil
}

// eventsRequests: events:PutEvents on each entry's bus, with its source
// and detail-type as condition keys.
func (e *enforcer) eventsRequests(p *Principal, action string, body []byte) ([]iamauth.Request, error) {
	if action != "PutEvents" {
		return nil, fmt.Errorf("the test bed has no authorisation model for events:%s (add it to notifyauth.go)", action)
	}
	var in struct {
		Entries []struct{ EventBusName, Source, DetailType string }
	}
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, fmt.Errorf("PutEvents body: %w", err)
	}
	var out []iamauth.Request
	for _, en := range in.Entries {
		bus := en.EventBusName
		if bus == "" {
			bus = "default"
		}
		if !strings.HasPrefix(bus, "arn:") {
			bus = fmt.Sprintf("arn:aws:events:%s:%s:event-bus/%s", Region, p.Account, bus)
		}
		c := globalContext(p)
		c["events:source"] = []string{en.Source}
		c["events:detail-type"] = []string{en.DetailType}
		out = append(out, iamauth.Request{Action: "events:PutEvents", Resource: bus, Context: c})
	}
	return out, nil
}

// s3PutRequest: s3:PutObject on the object of a PUT (a copy, which needs
// s3:GetObject on its source too, stays moto's: ok is false).
func (e *enforcer) s3PutRequest(p *Principal, r *http.Request) (iamauth.Request, bool) {
	if r.Method != http.MethodPut || r.Header.Get("X-Amz-Copy-Source") != "" {
		return iamauth.Request{}, false
	}
	path, err := url.PathUnescape(r.URL.EscapedPath())
	if err != nil {
		path = r.URL.Path
	}
	return iamauth.Request{Action: "s3:PutObject", Resource: "arn:aws:s3:::" + strings.TrimPrefix(path, "/"), Context: globalContext(p)}, true
}

// decide evaluates reqs for p: nil when all are allowed, else the answer
// AWS gives in op's protocol.
func (e *enforcer) decide(p *Principal, op Op, reqs []iamauth.Request, docs []*iamauth.Document) *reply {
	for _, rq := range reqs {
		rq.Principal = p.ARN
		d, _, err := iamauth.Evaluate(docs, rq)
		if err != nil {
			return internalError("IAM enforcement of "+op.String(), err)
		}
		e.count(rq.Action, d)
		if d != iamauth.Allow {
			return notifyDenied(op, rq, d)
		}
	}
	return nil
}

// notifyDenied is AWS's AccessDenied in the protocol of S3 (REST XML),
// SNS (query XML) or EventBridge (JSON).
func notifyDenied(op Op, rq iamauth.Request, d iamauth.Decision) *reply {
	why := "because no identity-based policy allows the " + rq.Action + " action"
	if d == iamauth.ExplicitDeny {
		why = "with an explicit deny in an identity-based policy"
	}
	msg := fmt.Sprintf("User: %s is not authorized to perform: %s on resource: %s %s", rq.Principal, rq.Action, rq.Resource, why)
	switch op.Service {
	case "s3":
		body := fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>`+"\n"+`<Error><Code>AccessDenied</Code><Message>%s</Message><RequestId>testbed</RequestId></Error>`, xmlEscape(msg))
		return &reply{Status: http.StatusForbidden, Header: http.Header{"Content-Type": {"application/xml"}}, Body: []byte(body)}
	case "sns":
		body := fmt.Sprintf(`<ErrorResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/"><Error><Type>Sender</Type><Code>AuthorizationError</Code><Message>%s</Message></Error><RequestId>testbed-%d</RequestId></ErrorResponse>`,
			xmlEscape(msg), time.Now().UnixNano())
		return &reply{Status: http.StatusForbidden, Header: http.Header{"Content-Type": {"text/xml"}}, Body: []byte(body)}
	}
	return writeDenied(op, http.StatusBadRequest, "AccessDeniedException", msg)
}
