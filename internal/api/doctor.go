package api

// PathDoctor is GET: the agent's checks of what a first real run needs
// (agentctl doctor).
const PathDoctor = "/v1/doctor"

// DoctorResult is the verdict of one doctor check.
type DoctorResult string

// Verdicts: ok, warn (works, but look), fail (a deployment or a rollback
// would fail; agentctl doctor exits 1).
const (
	DoctorOK   DoctorResult = "ok"
	DoctorWarn DoctorResult = "warn"
	DoctorFail DoctorResult = "fail"
)

// DoctorCheck is one line of the report.
type DoctorCheck struct {
	// Name says what was checked: imds, identity, credentials,
	// ec2:CreateSnapshots, channel, alarm NAME, volume VOL-ID,
	// snapshots VOL-ID, unit.
	Name   string       `json:"name"`
	Result DoctorResult `json:"result"`
	// Detail is what was found; for a denied call it names the missing
	// grant (action and resource), bucket or alarm.
	Detail string `json:"detail"`
	// Fix says what to do, in words; empty when nothing needs doing.
	Fix string `json:"fix,omitempty"`
}

// DoctorReport is GET /v1/doctor.
type DoctorReport struct {
	SchemaVersion int           `json:"schema_version"`
	Checks        []DoctorCheck `json:"checks"`
}

// Failed reports whether any check failed.
func (r DoctorReport) Failed() bool {
	for _, c := range r.Checks {
		if c.Result == DoctorFail {
			return true
		}
	}
	return false
}
