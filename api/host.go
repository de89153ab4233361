package api

import (
	"time"

	"github.com/ferrydeploy/ferry"
)

// HostReport is what an agent says about its host, every few seconds and
// after every change, and what ferry status shows of it. The agent keeps
// more (how to adopt its processes); this is the part others may rely on.
// Config values in Spec and Rejected are masked (ferry.Masked).
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
	Release string         `json:"release"`
	Label   string         `json:"label,omitempty"`
	Number  int            `json:"number,omitempty"`
	SHA256  string         `json:"sha256"`
	State   ferry.AppState `json:"state"`
	// Error is the last failure in words, for the host's own status;
	// Failure is the same as a value.
	Error   string         `json:"error,omitempty"`
	Failure *ferry.Failure `json:"failure,omitempty"`
	// Spec is the desired entry the running release was started from.
	Spec *ferry.DesiredApp `json:"spec,omitempty"`
	// LastHealthy is the last release that passed its checks here.
	LastHealthy string `json:"last_healthy,omitempty"`
	// Rejected is a desired entry whose release failed here; the agent
	// does not retry it until the desired state changes.
	Rejected  *ferry.DesiredApp `json:"rejected,omitempty"`
	Processes []ProcessStatus   `json:"processes"`
	Updated   time.Time         `json:"updated"`
}

// ProcessStatus is one process instance.
type ProcessStatus struct {
	Process   string             `json:"process"`
	Instance  int                `json:"instance"`
	State     string             `json:"state"` // running, backoff, stopped, detached
	PID       int                `json:"pid,omitempty"`
	Started   time.Time          `json:"started,omitzero"`
	Port      int                `json:"port,omitempty"`
	Restarts  int                `json:"restarts"`
	Health    ferry.HealthStatus `json:"health"`
	Ready     bool               `json:"ready"`
	Release   string             `json:"release,omitempty"`
	LastError string             `json:"last_error,omitempty"`
	CrashLoop bool               `json:"crash_loop,omitempty"`
	NextStart time.Time          `json:"next_start,omitzero"`
}
