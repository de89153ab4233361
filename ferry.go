// Package ferry holds the domain types shared by every part of ferry: the
// app described by ferry.yaml, the metadata an artifact carries, artifacts,
// releases, deployments, hosts and what they report, the desired state of
// a host, the typed states and failures, the rules for names and digests,
// and the error kinds that the CLI and the API map to exit codes and HTTP
// statuses.
//
// It imports only the standard library; adapters live under internal/
// and only internal/cli wires them together.
package ferry

import (
	"time"
)

// App is an app's ferry.yaml (or Procfile) after parsing and defaulting.
type App struct {
	Name         string
	Build        Build
	Include      []string
	Exclude      []string
	Processes    []Process // in the order the file lists them
	Hooks        Hooks
	Shared       []string
	Deploy       DeployPolicy
	KeepReleases int
}

// Process returns the named process, or nil.
func (a *App) Process(name string) *Process {
	for i := range a.Processes {
		if a.Processes[i].Name == name {
			return &a.Processes[i]
		}
	}
	return nil
}

// Build says how to turn an app's source into the files of its artifact.
type Build struct {
	Go      string // a Go main package, e.g. ./cmd/hello
	Command string // any shell command; Include says what to pack
}

// Upgrade modes for a process with a port; see DESIGN.md, "Zero downtime".
const (
	UpgradeProxy     = "proxy"
	UpgradeHandoff   = "handoff"
	UpgradeStopStart = "stop-start"
)

// Process is one entry of `processes:` or one line of a Procfile.
type Process struct {
	Name        string
	Command     string
	Port        int
	Upgrade     string
	Health      *Health
	Scale       int
	StopTimeout time.Duration
	// User runs the process as this user (and its group); "" is the
	// agent's own. The agent must be root to use it.
	User   string
	Limits Limits
}

// Limits are a process's resource limits; 0 leaves one as the agent has it.
type Limits struct {
	NoFile int // open files (RLIMIT_NOFILE)
	NProc  int // processes of its user (RLIMIT_NPROC)
}

// Health is a process's health check, with Kubernetes probe semantics.
type Health struct {
	HTTP        string // path of an HTTP GET
	TCP         bool   // connect to the instance's port
	Exec        string // command that exits 0 when healthy
	Status      int    // expected HTTP status; 0 means any 2xx or 3xx
	Interval    time.Duration
	Timeout     time.Duration
	Healthy     int
	Unhealthy   int
	StartPeriod time.Duration
}

// Hooks are shell commands run on the host in the release directory.
type Hooks struct {
	Pre     []string // before unpack
	Post    []string // after unpack, before switch
	Success []string // after switch; get the deploy log on stdin
	Failure []string // after a failure; get the deploy log on stdin
}

// DeployPolicy is how a rollout of the app proceeds by default.
type DeployPolicy struct {
	Strategy      string
	Batch         string
	Canary        int
	AutoRollback  bool
	HealthTimeout time.Duration // 0: whoever deploys uses its own default
}

// Meta is what an artifact says about itself, in .ferry/meta.json.
type Meta struct {
	App       string    `json:"app"`
	Version   string    `json:"version"`
	Commit    string    `json:"commit,omitempty"`
	Dirty     bool      `json:"dirty"`
	GoVersion string    `json:"go_version,omitempty"`
	OS        string    `json:"os"`
	Arch      string    `json:"arch"`
	Processes []string  `json:"processes"`
	Built     time.Time `json:"built"`
}

// MetaPath is where an artifact keeps its Meta.
const MetaPath = ".ferry/meta.json"
