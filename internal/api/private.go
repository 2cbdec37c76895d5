package api

// What the API withholds from readers who are not root: the Detail of
// health check results (a command check's output, an HTTP body), which may
// hold the application's secrets. The server applies these to every
// answer that carries check results before a socket group member sees it.

// WithoutDetails returns copies of the results without their Detail, each
// that had one marked DetailWithheld.
func WithoutDetails(checks []CheckResult) []CheckResult {
	if checks == nil {
		return nil
	}
	out := make([]CheckResult, len(checks))
	for i, c := range checks {
		if c.Detail != "" {
			c.Detail, c.DetailWithheld = "", true
		}
		out[i] = c
	}
	return out
}

// WithoutDetails returns a copy of the summary without check details.
func (h *HealthSummary) WithoutDetails() *HealthSummary {
	if h == nil {
		return nil
	}
	c := *h
	c.Checks = WithoutDetails(h.Checks)
	return &c
}

// WithoutDetails returns the status without check details.
func (s Status) WithoutDetails() Status {
	s.Health = s.Health.WithoutDetails()
	return s
}

// WithoutDetails returns the report without check details.
func (r HealthReport) WithoutDetails() HealthReport {
	r.Checks = WithoutDetails(r.Checks)
	return r
}

// WithoutDetails returns the record without check details.
func (d Deployment) WithoutDetails() Deployment {
	d.Health = d.Health.WithoutDetails()
	return d
}

// WithoutDetails returns the event without check details.
func (e Event) WithoutDetails() Event {
	if e.Deployment != nil {
		d := e.Deployment.WithoutDetails()
		e.Deployment = &d
	}
	return e
}
