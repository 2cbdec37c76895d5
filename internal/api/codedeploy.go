package api

// CodeDeploy deployments on a host whose hooks were injected by
// `agentctl push --codedeploy-app`: AWS's CodeDeploy agent runs the
// lifecycle events, and the injected hooks tell this agent about them
// over the socket, so that it takes the rollback point in BeforeInstall
// and is the health gate in ValidateService. The agent keeps a record of
// kind codedeploy for each, so `agentctl history` and `checkpoint list`
// line up with CodeDeploy's deployment ids.

// Paths of the CodeDeploy endpoints (POST).
const (
	PathCodeDeployBegin = "/v1/codedeploy/begin"
	PathCodeDeployGate  = "/v1/codedeploy/gate"
)

// KindCodeDeploy is a CodeDeploy deployment the agent recorded: a
// checkpoint before it, and its health gate.
const KindCodeDeploy DeploymentKind = "codedeploy"

// CodeDeployRef names a CodeDeploy deployment as its hooks see it
// (the CodeDeploy agent's hook environment: DEPLOYMENT_ID,
// APPLICATION_NAME, DEPLOYMENT_GROUP_NAME, DEPLOYMENT_GROUP_ID).
type CodeDeployRef struct {
	DeploymentID    string `json:"deployment_id"`
	Application     string `json:"application,omitempty"`
	DeploymentGroup string `json:"deployment_group,omitempty"`
	GroupID         string `json:"deployment_group_id,omitempty"`
}

// CodeDeployRequest is the body of both endpoints. Revision is the
// version `agentctl push` bundled (written into the injected hooks).
type CodeDeployRequest struct {
	CodeDeploy CodeDeployRef `json:"codedeploy"`
	Revision   string        `json:"revision,omitempty"`
}

// Assessments that found a succeeded deployment unhealthy later
// (Deployment.Assessment).
const (
	AssessmentWatchWindow = "watch_window"
	AssessmentBoot        = "boot"
)
