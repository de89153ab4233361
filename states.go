package ferry

// The typed states that travel on the wire and are stored. Only the CLI
// and the UI turn them into sentences.

// AppState is where one app stands on one host.
type AppState string

const (
	AppInstalling AppState = "installing"
	AppRunning    AppState = "running"
	AppFailed     AppState = "failed"
	AppStopped    AppState = "stopped"
)

// HealthStatus is what an instance's checks say.
type HealthStatus string

const (
	HealthUnknown HealthStatus = "unknown"
	Healthy       HealthStatus = "healthy"
	Unhealthy     HealthStatus = "unhealthy"
)

// DeploymentState is where a deployment stands.
type DeploymentState string

const (
	DeployRunning    DeploymentState = "running"
	DeployWaiting    DeploymentState = "waiting-promote" // canary done; ferry promote continues
	DeploySucceeded  DeploymentState = "succeeded"
	DeployFailed     DeploymentState = "failed"
	DeployRolledBack DeploymentState = "rolled-back"
)

// Ended reports whether a deployment in state s is over.
func (s DeploymentState) Ended() bool {
	return s == DeploySucceeded || s == DeployFailed || s == DeployRolledBack
}

// HostRolloutState is where one host stands in a deployment.
type HostRolloutState string

const (
	HostPending    HostRolloutState = "pending"
	HostDeploying  HostRolloutState = "deploying"
	HostHealthy    HostRolloutState = "healthy"
	HostFailed     HostRolloutState = "failed"
	HostRolledBack HostRolloutState = "rolled-back"
)

// Outcome is how a release's last deployment went.
type Outcome string

const (
	OutcomeNone       Outcome = ""
	OutcomeDeploying  Outcome = "deploying"
	OutcomeHealthy    Outcome = "healthy"
	OutcomeFailed     Outcome = "failed"
	OutcomeRolledBack Outcome = "rolled-back"
)

// FailureKind says which step of a release failed on a host.
type FailureKind string

const (
	FailFetch     FailureKind = "fetch"     // download or checksum
	FailUnpack    FailureKind = "unpack"    // the archive was refused or could not be written
	FailHook      FailureKind = "hook"      // a pre or post hook exited non-zero
	FailSignature FailureKind = "signature" // refused: not signed by a trusted key
	FailConfig    FailureKind = "config"    // ferry.yaml, scale or env refused
	FailStart     FailureKind = "start"     // a process did not start, or crashed before it was ready
	FailHealth    FailureKind = "health"    // not healthy within the health timeout
	FailOther     FailureKind = "other"
)

// Failure is why a release failed on a host: a value, so the server, the
// CLI and the UI show it without parsing anybody's message.
type Failure struct {
	Kind FailureKind `json:"kind"`
	// Release is the host's release the failure is about ("v5-1a2b3c4d").
	Release string `json:"release,omitempty"`
	// Check names what failed: a health check ("http /healthz"), a hook
	// ("post: npm ci"), an instance ("web.2").
	Check string `json:"check,omitempty"`
	// Message is the failure itself, without the release's name.
	Message string `json:"message"`
	// Output is an excerpt of what the check or hook last printed.
	Output string `json:"output,omitempty"`
	// RolledBackTo is the release the host went back to, if it did.
	RolledBackTo string `json:"rolled_back_to,omitempty"`
}
