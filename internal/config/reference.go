package config

// KeyDoc documents one key of agent.yaml for the generated reference.
type KeyDoc struct {
	Doc string
	// Default is what validation fills in when the key is left out, for
	// keys whose default is not in Default() (the fields of one check).
	Default string
}

// ReferenceDocs documents the keys whose struct fields carry no doc tag:
// the fields of one health check, whose defaults validation fills in per
// check. Keys are paths as in the reference: health.checks[].http.url.
// A key with a doc tag is documented by the tag; reference_test.go keeps
// the defaults here equal to what Parse fills in.
func ReferenceDocs() map[string]KeyDoc {
	return map[string]KeyDoc{
		"health.checks[].name":                               {Doc: "Unique name of the check: letters, digits, '.', '_' or '-'; shown in status, logs and metrics."},
		"health.checks[].http.url":                           {Doc: "http(s) URL to GET."},
		"health.checks[].http.expect_status":                 {Default: "200-299"},
		"health.checks[].http.body_contains":                 {Doc: "When set, the body must also contain this text."},
		"health.checks[].http.timeout":                       {Doc: "Bound of one request.", Default: "2s"},
		"health.checks[].tcp.address":                        {Doc: "host:port that must accept a connection."},
		"health.checks[].tcp.timeout":                        {Doc: "Bound of one connection attempt.", Default: "1s"},
		"health.checks[].command.argv":                       {Doc: "Program and arguments, run without a shell; exit 0 passes."},
		"health.checks[].command.timeout":                    {Doc: "The command is killed and fails after this.", Default: "10s"},
		"health.checks[].systemd.unit":                       {Doc: "Unit that must be active (asked over D-Bus)."},
		"health.checks[].cloudwatch_alarm.alarm_names":       {Doc: "Alarms read with cloudwatch:DescribeAlarms; any in ALARM fails the check."},
		"health.checks[].cloudwatch_alarm.insufficient_data": {Default: "healthy"},
	}
}
