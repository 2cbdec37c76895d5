package identity

import "context"

// ProbeIMDS makes one IMDSv2 token request to the endpoint the SDK uses
// and returns the HTTP status (agentctl doctor).
func ProbeIMDS(ctx context.Context) (int, error) { return probeToken(ctx, IMDSEndpoint()) }
