package health

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch/types"

	"github.com/rollback-agent/rollback-agent/internal/config"
	"github.com/rollback-agent/rollback-agent/internal/testbed"
)

// motoCloudWatch returns a CloudWatch client talking to the bed's moto.
func motoCloudWatch(t *testing.T) *cloudwatch.Client {
	t.Helper()
	bed := peers.Get(t)
	return cloudwatch.New(cloudwatch.Options{
		Region:       testbed.Region,
		BaseEndpoint: aws.String(bed.Moto.URL),
		Credentials:  credentials.NewStaticCredentialsProvider(testbed.AccessKey, testbed.SecretKey, ""),
	})
}

func cwDeps(c CloudWatchAPI) Deps {
	return Deps{CloudWatch: func(context.Context) (CloudWatchAPI, error) { return c, nil }}
}

func alarmCfg(insufficient string, names ...string) config.Check {
	return config.Check{Name: "errors", CloudWatchAlarm: &config.CloudWatchCheck{AlarmNames: names, InsufficientData: insufficient}}
}

// putAlarm creates a metric alarm with a name unique to the test (moto is
// shared by the whole test binary) and returns the name.
func putAlarm(t *testing.T, cw *cloudwatch.Client, suffix string) string {
	t.Helper()
	name := strings.NewReplacer("/", "-", " ", "-").Replace(t.Name()) + "-" + suffix
	_, err := cw.PutMetricAlarm(t.Context(), &cloudwatch.PutMetricAlarmInput{
		AlarmName:          aws.String(name),
		Namespace:          aws.String("rollback-agent/test"),
		MetricName:         aws.String("5xx"),
		Statistic:          types.StatisticSum,
		Period:             aws.Int32(60),
		EvaluationPeriods:  aws.Int32(1),
		Threshold:          aws.Float64(1),
		ComparisonOperator: types.ComparisonOperatorGreaterThanOrEqualToThreshold,
	})
	if err != nil {
		// A 404 from moto here means the SDK speaks a protocol moto lacks:
		// cloudwatch v1.53.0 and later default to Smithy RPCv2 CBOR.
		t.Fatalf("PutMetricAlarm %s: %v", name, err)
	}
	return name
}

func setAlarm(t *testing.T, cw *cloudwatch.Client, name string, state types.StateValue, reason string) {
	t.Helper()
	_, err := cw.SetAlarmState(t.Context(), &cloudwatch.SetAlarmStateInput{
		AlarmName: aws.String(name), StateValue: state, StateReason: aws.String(reason),
	})
	if err != nil {
		t.Fatalf("SetAlarmState %s %s: %v", name, state, err)
	}
}

func TestCloudWatchAlarmStatesAgainstMoto(t *testing.T) {
	cw := motoCloudWatch(t)
	name := putAlarm(t, cw, "5xx")
	other := putAlarm(t, cw, "latency")
	setAlarm(t, cw, other, types.StateValueOk, "fine")
	for _, tc := range []struct {
		state        types.StateValue
		insufficient string
		healthy      bool
		output       string
	}{
		{types.StateValueOk, "", true, "alarms: " + name + " OK, " + other + " OK"},
		{types.StateValueAlarm, "", false, "alarm " + name + " is in ALARM: Threshold Crossed: 5 errors (also: " + other + " OK)"},
		{types.StateValueInsufficientData, "", true, name + " INSUFFICIENT_DATA (counted healthy)"},
		{types.StateValueInsufficientData, "healthy", true, name + " INSUFFICIENT_DATA (counted healthy)"},
		{types.StateValueInsufficientData, "unhealthy", false, "alarm " + name + " is INSUFFICIENT_DATA, counted unhealthy (insufficient_data: unhealthy): Threshold Crossed: 5 errors"},
	} {
		t.Run(fmt.Sprintf("%s/%s", tc.state, tc.insufficient), func(t *testing.T) {
			setAlarm(t, cw, name, tc.state, "Threshold Crossed: 5 errors")
			res, _ := checkOne(t, alarmCfg(tc.insufficient, name, other), cwDeps(cw))
			if res.Healthy != tc.healthy {
				t.Fatalf("Healthy = %v, want %v; output %q", res.Healthy, tc.healthy, res.Output)
			}
			if res.Kind != KindCloudWatch {
				t.Errorf("Kind = %q", res.Kind)
			}
			wantContains(t, "Output", res.Output, tc.output)
		})
	}
}

func TestCloudWatchMissingAlarmAgainstMoto(t *testing.T) {
	cw := motoCloudWatch(t)
	name := putAlarm(t, cw, "exists")
	setAlarm(t, cw, name, types.StateValueOk, "fine")
	missing := "rollback-agent-test-no-such-alarm"
	res, _ := checkOne(t, alarmCfg("", name, missing), cwDeps(cw))
	if res.Healthy {
		t.Fatalf("Healthy = true with a missing alarm: %q", res.Output)
	}
	wantContains(t, "Output", res.Output, "alarm "+missing+" does not exist", name+" OK")
}

func TestCloudWatchAPIErrorNamesTheCall(t *testing.T) {
	cw := cloudwatch.New(cloudwatch.Options{
		Region:           testbed.Region,
		BaseEndpoint:     aws.String("http://" + closedAddr(t)),
		Credentials:      credentials.NewStaticCredentialsProvider(testbed.AccessKey, testbed.SecretKey, ""),
		RetryMaxAttempts: 1,
	})
	res, _ := checkOne(t, alarmCfg("", "a"), cwDeps(cw))
	if res.Healthy {
		t.Fatal("Healthy = true with an unreachable CloudWatch")
	}
	wantContains(t, "Output", res.Output, "CloudWatch DescribeAlarms for a: ", "connection refused")
}

func TestCloudWatchWithoutClient(t *testing.T) {
	res, _ := checkOne(t, alarmCfg("", "a"), Deps{})
	if res.Healthy || !strings.Contains(res.Output, "no CloudWatch client is available") {
		t.Errorf("no client: Healthy = %v, Output = %q", res.Healthy, res.Output)
	}
	deps := Deps{CloudWatch: func(context.Context) (CloudWatchAPI, error) { return nil, errors.New("no region") }}
	res, _ = checkOne(t, alarmCfg("", "a"), deps)
	if res.Healthy || !strings.Contains(res.Output, "building the CloudWatch client: no region") {
		t.Errorf("client error: Healthy = %v, Output = %q", res.Healthy, res.Output)
	}
}

// pagingCloudWatch answers DescribeAlarms pageSize alarms per page (or
// forever, with endless) and records the calls; it tests the paging and
// chunking logic, which moto (no pagination) cannot exercise.
type pagingCloudWatch struct {
	pageSize int
	endless  bool

	mu    sync.Mutex
	calls []cloudwatch.DescribeAlarmsInput
}

func (p *pagingCloudWatch) DescribeAlarms(_ context.Context, in *cloudwatch.DescribeAlarmsInput, _ ...func(*cloudwatch.Options)) (*cloudwatch.DescribeAlarmsOutput, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, *in)
	from := 0
	if in.NextToken != nil {
		if _, err := fmt.Sscan(*in.NextToken, &from); err != nil {
			return nil, fmt.Errorf("bad token %q", *in.NextToken)
		}
	}
	to := min(from+p.pageSize, len(in.AlarmNames))
	out := &cloudwatch.DescribeAlarmsOutput{}
	for _, name := range in.AlarmNames[from:to] {
		if strings.HasPrefix(name, "composite") {
			out.CompositeAlarms = append(out.CompositeAlarms, types.CompositeAlarm{AlarmName: aws.String(name), StateValue: types.StateValueOk})
		} else {
			out.MetricAlarms = append(out.MetricAlarms, types.MetricAlarm{AlarmName: aws.String(name), StateValue: types.StateValueOk})
		}
	}
	if to < len(in.AlarmNames) || p.endless {
		out.NextToken = aws.String(fmt.Sprint(to))
	}
	return out, nil
}

func TestCloudWatchPagesAndChunks(t *testing.T) {
	var names []string
	for i := range 102 {
		names = append(names, fmt.Sprintf("alarm-%03d", i))
	}
	names = append(names, "composite-1", "alarm-000") // a duplicate is asked once
	p := &pagingCloudWatch{pageSize: 40}
	res, _ := checkOne(t, alarmCfg("", names...), cwDeps(p))
	if !res.Healthy {
		t.Fatalf("Healthy = false: %.300q", res.Output)
	}
	// 103 distinct names: a chunk of 100 (pages of 40, 40, 20) and one of 3.
	var sizes []int
	for _, c := range p.calls {
		sizes = append(sizes, len(c.AlarmNames))
		if !slices.Contains(c.AlarmTypes, types.AlarmTypeCompositeAlarm) || !slices.Contains(c.AlarmTypes, types.AlarmTypeMetricAlarm) {
			t.Errorf("AlarmTypes = %v, want metric and composite alarms", c.AlarmTypes)
		}
	}
	if !slices.Equal(sizes, []int{100, 100, 100, 3}) {
		t.Errorf("calls asked for %v names, want [100 100 100 3]", sizes)
	}
	wantContains(t, "Output", res.Output, "composite-1 OK", "alarm-101 OK")
}

func TestCloudWatchEndlessPagingStops(t *testing.T) {
	p := &pagingCloudWatch{pageSize: 1, endless: true}
	res, _ := checkOne(t, alarmCfg("", "a"), cwDeps(p))
	if res.Healthy {
		t.Fatal("Healthy = true although the answer never ended")
	}
	wantContains(t, "Output", res.Output, "CloudWatch DescribeAlarms for a: still paginating after 10 pages")
	if len(p.calls) != maxAlarmPages {
		t.Errorf("%d calls, want %d", len(p.calls), maxAlarmPages)
	}
}
