package health

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch/types"

	"github.com/rollback-agent/rollback-agent/internal/config"
)

// DescribeAlarms takes at most 100 names per call.
const alarmNamesPerCall = 100

// maxAlarmPages stops a paginating loop on a server that keeps handing out
// next tokens; 100 names never need more than a couple of pages.
const maxAlarmPages = 10

type cloudWatchCheck struct {
	names               []string
	insufficientHealthy bool
	client              func(ctx context.Context) (CloudWatchAPI, error)
}

type alarmState struct {
	state  types.StateValue
	reason string
}

func newCloudWatchCheck(name string, c config.CloudWatchCheck, client func(ctx context.Context) (CloudWatchAPI, error)) (Checker, error) {
	if len(c.AlarmNames) == 0 {
		return nil, errors.New("cloudwatch_alarm.alarm_names must name at least one alarm")
	}
	var names []string
	for _, n := range c.AlarmNames {
		if n == "" {
			return nil, errors.New("cloudwatch_alarm.alarm_names has an empty name")
		}
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	var insufficientHealthy bool
	switch c.InsufficientData {
	case "", "healthy":
		insufficientHealthy = true
	case "unhealthy":
	default:
		return nil, fmt.Errorf("cloudwatch_alarm.insufficient_data %q: want healthy or unhealthy", c.InsufficientData)
	}
	cw := &cloudWatchCheck{names: names, insufficientHealthy: insufficientHealthy, client: client}
	return &checker{name: name, kind: KindCloudWatch, what: "CloudWatch DescribeAlarms",
		timeout: defaultCloudWatchTimeout, probe: plain(cw.probe)}, nil
}

func (c *cloudWatchCheck) probe(ctx context.Context) (bool, string) {
	if c.client == nil {
		return false, "cloudwatch_alarm check: no CloudWatch client is available to the agent (no AWS configuration)"
	}
	cw, err := c.client(ctx)
	if err != nil {
		return false, fmt.Sprintf("cloudwatch_alarm check: building the CloudWatch client: %v", err)
	}
	if cw == nil {
		return false, "cloudwatch_alarm check: building the CloudWatch client: no client returned"
	}
	states, err := c.describe(ctx, cw)
	if err != nil {
		return false, err.Error()
	}

	var problems, fine []string
	for _, n := range c.names {
		st, ok := states[n]
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("alarm %s does not exist", n))
		case st.state == types.StateValueAlarm:
			problems = append(problems, fmt.Sprintf("alarm %s is in ALARM: %s", n, st.reason))
		case st.state == types.StateValueInsufficientData && !c.insufficientHealthy:
			problems = append(problems, fmt.Sprintf("alarm %s is INSUFFICIENT_DATA, counted unhealthy (insufficient_data: unhealthy): %s", n, st.reason))
		case st.state == types.StateValueInsufficientData:
			fine = append(fine, n+" INSUFFICIENT_DATA (counted healthy)")
		case st.state == types.StateValueOk:
			fine = append(fine, n+" OK")
		default:
			// A state this SDK does not know: better to say so than to guess.
			problems = append(problems, fmt.Sprintf("alarm %s is in unknown state %q: %s", n, st.state, st.reason))
		}
	}
	if len(problems) > 0 {
		msg := strings.Join(problems, "; ")
		if len(fine) > 0 {
			msg += " (also: " + strings.Join(fine, ", ") + ")"
		}
		return false, msg
	}
	return true, "alarms: " + strings.Join(fine, ", ")
}

// describe fetches the state of every configured alarm, metric or
// composite; alarms that do not exist are simply absent from the map.
func (c *cloudWatchCheck) describe(ctx context.Context, cw CloudWatchAPI) (map[string]alarmState, error) {
	states := make(map[string]alarmState, len(c.names))
	for chunk := range slices.Chunk(c.names, alarmNamesPerCall) {
		in := &cloudwatch.DescribeAlarmsInput{
			AlarmNames: chunk,
			// Without AlarmTypes, CloudWatch returns metric alarms only and a
			// composite alarm would look missing.
			AlarmTypes: []types.AlarmType{types.AlarmTypeMetricAlarm, types.AlarmTypeCompositeAlarm},
			MaxRecords: aws.Int32(alarmNamesPerCall),
		}
		for page := 0; ; page++ {
			if page == maxAlarmPages {
				return nil, fmt.Errorf("CloudWatch DescribeAlarms for %s: still paginating after %d pages", strings.Join(chunk, ", "), maxAlarmPages)
			}
			out, err := cw.DescribeAlarms(ctx, in)
			if err != nil {
				return nil, fmt.Errorf("CloudWatch DescribeAlarms for %s: %w", strings.Join(chunk, ", "), err)
			}
			if out == nil {
				return nil, fmt.Errorf("CloudWatch DescribeAlarms for %s: empty answer", strings.Join(chunk, ", "))
			}
			for _, a := range out.MetricAlarms {
				states[aws.ToString(a.AlarmName)] = alarmState{a.StateValue, aws.ToString(a.StateReason)}
			}
			for _, a := range out.CompositeAlarms {
				states[aws.ToString(a.AlarmName)] = alarmState{a.StateValue, aws.ToString(a.StateReason)}
			}
			if aws.ToString(out.NextToken) == "" {
				break
			}
			next := *in
			next.NextToken = out.NextToken
			in = &next
		}
	}
	return states, nil
}
