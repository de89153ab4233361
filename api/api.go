// Package api is the wire contract of ferry's control server: the paths,
// and the JSON bodies the server, the CLI's client and the agent exchange.
// It holds no behaviour, so every side can import it.
//
// Errors are {"error": {"code": "...", "message": "..."}} with the code one
// of ferry's error kinds; the HTTP status follows from it (invalid 400,
// unauthorized 401, forbidden 403, not_found 404, locked 409, unhealthy
// 422, unavailable 503, internal 500). Every request but /v1/agent/join carries
// "Authorization: Bearer TOKEN".
package api

import (
	"time"

	"github.com/ferrydeploy/ferry"
)

// Paths. {sha256}, {app}, {id}, {group} are path values.
const (
	PathArtifacts   = "/v1/artifacts"                          // POST upload (body: the artifact; header SHA256Header); GET list
	PathArtifact    = "/v1/artifacts/{sha256}"                 // HEAD exists?; GET download (agents too)
	PathApps        = "/v1/apps"                               // GET []App
	PathReleases    = "/v1/apps/{app}/releases"                // GET []Release; POST ReleaseRequest → Release (made or found, not deployed)
	PathSignatures  = "/v1/apps/{app}/releases/{n}/signatures" // POST ferry.Signature → Release
	PathDeployments = "/v1/deployments"                        // POST DeployRequest → Deployment; GET ?app=&group= → []Deployment
	PathDeployment  = "/v1/deployments/{id}"                   // GET ?index=N&wait=30s (blocking) → Deployment
	PathPromote     = "/v1/deployments/{id}/promote"           // POST → Deployment
	PathRollback    = "/v1/rollback"                           // POST RollbackRequest → Deployment
	PathStatus      = "/v1/status"                             // GET ?app= → Status
	PathTokens      = "/v1/tokens"                             // POST TokenRequest → TokenCreated; GET → []Token
	PathToken       = "/v1/tokens/{id}"                        // DELETE (revoke)
	PathJoinTokens  = "/v1/join-tokens"                        // POST JoinTokenRequest → TokenCreated; GET → []Token (join tokens)
	PathHost        = "/v1/hosts/{name}"                       // DELETE: forget a host (credential, desired state, report)
	PathLocks       = "/v1/locks"                              // GET → []Lock
	PathLock        = "/v1/locks/{app}/{group}"                // DELETE (admin: break)
	PathAudit       = "/v1/audit"                              // GET ?app=&group=&who=&limit=N → []AuditEvent (admin)
	PathWhoami      = "/v1/whoami"                             // GET → Token: the caller's own credential, without its secret
	PathGC          = "/v1/gc"                                 // POST GCRequest → GCResult (admin)
	PathAgentJoin   = "/v1/agent/join"                         // POST JoinRequest (no bearer; the join token is in the body) → JoinResponse
	PathDesired     = "/v1/agent/desired"                      // GET ?index=N&wait=5m → Desired (agent credential)
	PathReport      = "/v1/agent/report"                       // POST Report (agent credential) → 204
	PathHealth      = "/healthz"                               // GET, no auth
)

// SHA256Header carries an upload's digest; the server verifies it.
const SHA256Header = "X-Ferry-SHA256"

// AppHeader names an upload's app before its bytes arrive, so the server
// checks the credential's scope first and stores the artifact under its
// app; the server checks it against the artifact's own meta.json.
const AppHeader = "X-Ferry-App"

// IndexHeader carries the state index an answer reflects, for blocking
// queries (as Consul's X-Consul-Index).
const IndexHeader = "X-Ferry-Index"

// Roles, weakest first.
const (
	RoleViewer   = "viewer"
	RoleDeployer = "deployer"
	RoleAdmin    = "admin"
	RoleAgent    = "agent" // a host's own credential: its desired state and reports only
)

// ErrorBody is how every error is answered.
type ErrorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// GCRequest asks the server to remove artifacts no release references,
// keeping the Keep newest per app and any uploaded within MinAge.
type GCRequest struct {
	Keep   int           `json:"keep"`
	MinAge time.Duration `json:"min_age"`
	DryRun bool          `json:"dry_run,omitempty"`
}

// GCResult is what a collection removed (or would have, on a dry run).
type GCResult struct {
	Removed []Artifact `json:"removed"`
	Kept    int        `json:"kept"`
	Freed   int64      `json:"freed"` // bytes
	DryRun  bool       `json:"dry_run,omitempty"`
	// Failed are the artifacts the store would not delete, with why.
	Failed map[string]string `json:"failed,omitempty"`
}

// App is a deployable the server knows from its artifacts.
type App struct {
	Name      string     `json:"name"`
	Artifacts int        `json:"artifacts"`
	Releases  int        `json:"releases"`
	Groups    []GroupApp `json:"groups"`
}

// GroupApp is which release an app runs in one group.
type GroupApp struct {
	Group   string `json:"group"`
	Release int    `json:"release"` // 0: none
}

// ReleaseRequest selects an artifact (as a deploy does) to make a release
// of, with the app's newest config, without deploying it: to sign it first.
type ReleaseRequest struct {
	Group   string `json:"group,omitempty"`
	Version string `json:"version,omitempty"`
	SHA256  string `json:"sha256,omitempty"`
}

// Strategies.
const (
	StrategyAll     = "all"
	StrategyRolling = "rolling"
	StrategyCanary  = "canary"
)

// DeployRequest asks for a release of App on Group. Version names an
// artifact version (or "" for the newest artifact), or Release an existing
// release number.
type DeployRequest struct {
	App            string        `json:"app"`
	Group          string        `json:"group"`
	Version        string        `json:"version,omitempty"`
	SHA256         string        `json:"sha256,omitempty"`
	Release        int           `json:"release,omitempty"`
	Strategy       string        `json:"strategy,omitempty"` // default rolling
	Batch          string        `json:"batch,omitempty"`    // "2" or "25%"; default 25%
	Canary         int           `json:"canary,omitempty"`
	HealthTimeout  time.Duration `json:"health_timeout,omitempty"` // default 60s
	NoAutoRollback bool          `json:"no_auto_rollback,omitempty"`
	WaitLock       time.Duration `json:"wait_lock,omitempty"` // 0: fail at once with locked
}

// RollbackRequest rolls App on Group back to Release, or to the last
// release that was healthy on every host.
type RollbackRequest struct {
	App     string `json:"app"`
	Group   string `json:"group"`
	Release int    `json:"release,omitempty"`
	// DryRun names the release a rollback would go to (Release and From
	// of the answer, 200) without starting it: what a confirmation shows.
	DryRun bool `json:"dry_run,omitempty"`
}

// Deployment states: ferry's, named here too for the API's users.
const (
	DeployRunning    = ferry.DeployRunning
	DeployWaiting    = ferry.DeployWaiting // canary done; ferry promote continues
	DeploySucceeded  = ferry.DeploySucceeded
	DeployFailed     = ferry.DeployFailed
	DeployRolledBack = ferry.DeployRolledBack
)

// Status is hosts × apps, as the agents last reported.
type Status struct {
	Hosts []Host `json:"hosts"`
}

// TokenRequest creates an API token.
type TokenRequest struct {
	Name   string        `json:"name"`
	Role   string        `json:"role"`
	Apps   []string      `json:"apps,omitempty"`   // empty: all
	Groups []string      `json:"groups,omitempty"` // empty: all
	TTL    time.Duration `json:"ttl,omitempty"`    // 0: no expiry
}

// JoinTokenRequest creates a token agents join Groups with.
type JoinTokenRequest struct {
	Groups []string      `json:"groups"`
	TTL    time.Duration `json:"ttl,omitempty"`  // default 1h
	Uses   int           `json:"uses,omitempty"` // hosts that may join with it; 0: any number until it expires
	// Replace names an existing host a join with this token may take
	// over (its credential is revoked, it gets the token's groups). The
	// token's groups must cover all the host's groups. Without it, a
	// join under a name that is taken is refused.
	Replace string `json:"replace,omitempty"`
}

// TokenCreated is shown once: the server keeps only a hash of Secret.
type TokenCreated struct {
	Token
	Secret string `json:"secret"`
}

// Token is an API credential, without its secret.
type Token struct {
	ID      string    `json:"id"`
	Name    string    `json:"name"`
	Role    string    `json:"role"`
	Apps    []string  `json:"apps,omitempty"`
	Groups  []string  `json:"groups,omitempty"`
	Host    string    `json:"host,omitempty"` // agent credentials
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires,omitzero"`
	Revoked bool      `json:"revoked,omitempty"`
	// Join tokens: how many hosts may join with it (0: any), how many
	// did, and the host it may take over.
	Uses    int    `json:"uses,omitempty"`
	Used    int    `json:"used,omitempty"`
	Replace string `json:"replace,omitempty"`
	By      string `json:"by,omitempty"` // who created it
}

// Lock is the one deployment an app × group may have at a time: a lease
// renewed while its rollout lives.
type Lock struct {
	App     string    `json:"app"`
	Group   string    `json:"group"`
	Owner   string    `json:"owner"`  // who deployed
	Reason  string    `json:"reason"` // e.g. "deploy v4", with the deployment id
	Since   time.Time `json:"since"`
	Expires time.Time `json:"expires"`
}

// AuditEvent is one change: who, what, when, from where.
type AuditEvent struct {
	Time   time.Time `json:"time"`
	Who    string    `json:"who"`
	From   string    `json:"from"`
	Action string    `json:"action"` // e.g. deploy, publish, token.create
	Target string    `json:"target"`
	Detail string    `json:"detail,omitempty"`
	App    string    `json:"app,omitempty"`   // the app it touched, when one
	Group  string    `json:"group,omitempty"` // the group it touched, when one
}

// JoinRequest registers a host with a join token.
type JoinRequest struct {
	Token string `json:"token"`
	Name  string `json:"name"`
	// Credential is the host's own credential when it has one (an agent
	// that joins again because its server's address changed): it proves
	// the name is the caller's, so the join is no takeover.
	Credential string `json:"credential,omitempty"`
}

// JoinResponse is the host's own credential, to be kept by the agent.
type JoinResponse struct {
	Host   string   `json:"host"`
	Groups []string `json:"groups"`
	Secret string   `json:"secret"`
}

// Desired is a host's desired state: artifacts are server URLs
// (PathArtifact) the agent fetches with its own credential.
type Desired struct {
	Index uint64        `json:"index"`
	Doc   ferry.Desired `json:"doc"`
}

// Report is what an agent says about its host, every few seconds and after
// every change.
type Report struct {
	State HostReport `json:"state"`
}

// The domain types the wire carries live in the root package, ferry
// (STYLE.md: domain types at the root, the wire contract a leaf above it).
type (
	Artifact      = ferry.Artifact
	Release       = ferry.Release
	Deployment    = ferry.Deployment
	HostRollout   = ferry.HostRollout
	Host          = ferry.Host
	HostReport    = ferry.HostReport
	AppStatus     = ferry.AppStatus
	ProcessStatus = ferry.ProcessStatus
)
