package ferry

import "time"

// Artifact is an uploaded build, named by its sha256.
type Artifact struct {
	SHA256   string    `json:"sha256"`
	App      string    `json:"app"`
	Version  string    `json:"version"`
	Commit   string    `json:"commit,omitempty"` // the source's git commit, when built from git
	Dirty    bool      `json:"dirty,omitempty"`  // built from a tree with uncommitted changes
	OS       string    `json:"os,omitempty"`     // the target it was built for, from its meta.json
	Arch     string    `json:"arch,omitempty"`
	Size     int64     `json:"size"`
	Uploaded time.Time `json:"uploaded"`
	By       string    `json:"by"`
	Existed  bool      `json:"existed,omitempty"` // the upload was skipped: the server had it
}

// Release is an artifact plus a config revision, numbered per app.
type Release struct {
	App       string    `json:"app"`
	Number    int       `json:"number"` // vN
	SHA256    string    `json:"sha256"`
	Version   string    `json:"version"` // the artifact's
	ConfigRev int       `json:"config_rev"`
	Created   time.Time `json:"created"`
	By        string    `json:"by"`
	// Outcome of its last deployment: none yet, deploying, healthy,
	// failed, rolled-back.
	Outcome Outcome `json:"outcome,omitempty"`
	// Signatures of the release record (signature.ReleaseMessage).
	Signatures []Signature `json:"signatures,omitempty"`
}

// Deployment is one rollout of a release of an app to a group.
type Deployment struct {
	ID            string                 `json:"id"`
	App           string                 `json:"app"`
	Group         string                 `json:"group"`
	Release       int                    `json:"release"`
	From          int                    `json:"from"` // the release the group ran before; 0: none
	Strategy      string                 `json:"strategy"`
	Batch         string                 `json:"batch"`
	Canary        int                    `json:"canary,omitempty"`
	HealthTimeout time.Duration          `json:"health_timeout"`
	AutoRollback  bool                   `json:"auto_rollback"`
	State         DeploymentState        `json:"state"`
	Error         string                 `json:"error,omitempty"`
	Hosts         map[string]HostRollout `json:"hosts"`
	RollbackOf    string                 `json:"rollback_of,omitempty"` // the deployment this one undoes
	By            string                 `json:"by"`
	Started       time.Time              `json:"started"`
	Ended         time.Time              `json:"ended,omitzero"`
}

// HostRollout is one host's part of a deployment.
type HostRollout struct {
	Batch int              `json:"batch"`
	State HostRolloutState `json:"state"`
	// Error is why the host failed, in a sentence; Failure is the agent's
	// own account of it (the step, the check, its output) when it gave one.
	Error   string   `json:"error,omitempty"`
	Failure *Failure `json:"failure,omitempty"`
}

// Host is a machine running an agent.
type Host struct {
	Name     string                `json:"name"`
	Groups   []string              `json:"groups"`
	LastSeen time.Time             `json:"last_seen"`
	Lost     bool                  `json:"lost"`         // no heartbeat for a while
	OS       string                `json:"os,omitempty"` // as the host last reported
	Arch     string                `json:"arch,omitempty"`
	Apps     map[string]*AppStatus `json:"apps"`
}

// HostReport is what an agent says about its host, every few seconds and
// after every change, and what ferry status shows of it. The agent keeps
// more (how to adopt its processes); this is the part others may rely on.
// Config values in Spec and Rejected are masked (Masked).
type HostReport struct {
	Host    string                `json:"host"`
	Agent   int                   `json:"agent_pid,omitempty"`
	Desired string                `json:"desired,omitempty"` // where the agent reads its desired state
	Updated time.Time             `json:"updated"`
	Error   string                `json:"error,omitempty"` // reading the desired state
	OS      string                `json:"os,omitempty"`    // GOOS and GOARCH of the agent's binary
	Arch    string                `json:"arch,omitempty"`
	Apps    map[string]*AppStatus `json:"apps"`
}

// AppStatus is one app on one host.
type AppStatus struct {
	// Release is the host's release directory ("v3-1a2b3c4d"); Label is
	// the desired state's name for it (the server's "v3") and Number the
	// server's release number, 0 for a release not from a server.
	Release string   `json:"release"`
	Label   string   `json:"label,omitempty"`
	Number  int      `json:"number,omitempty"`
	SHA256  string   `json:"sha256"`
	State   AppState `json:"state"`
	// Error is the last failure in words, for the host's own status;
	// Failure is the same as a value.
	Error   string   `json:"error,omitempty"`
	Failure *Failure `json:"failure,omitempty"`
	// Spec is the desired entry the running release was started from.
	Spec *DesiredApp `json:"spec,omitempty"`
	// LastHealthy is the last release that passed its checks here.
	LastHealthy string `json:"last_healthy,omitempty"`
	// Rejected is a desired entry whose release failed here; the agent
	// does not retry it until the desired state changes.
	Rejected  *DesiredApp     `json:"rejected,omitempty"`
	Processes []ProcessStatus `json:"processes"`
	Updated   time.Time       `json:"updated"`
}

// ProcessStatus is one process instance.
type ProcessStatus struct {
	Process   string       `json:"process"`
	Instance  int          `json:"instance"`
	State     string       `json:"state"` // running, backoff, stopped, detached
	PID       int          `json:"pid,omitempty"`
	Started   time.Time    `json:"started,omitzero"`
	Port      int          `json:"port,omitempty"`
	Restarts  int          `json:"restarts"`
	Health    HealthStatus `json:"health"`
	Ready     bool         `json:"ready"`
	Release   string       `json:"release,omitempty"`
	LastError string       `json:"last_error,omitempty"`
	CrashLoop bool         `json:"crash_loop,omitempty"`
	NextStart time.Time    `json:"next_start,omitzero"`
}
