package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/internal/agent/supervise"
	"github.com/ferrydeploy/ferry/internal/desired"
	"github.com/ferrydeploy/ferry/internal/fsutil"
)

// Files and directories under the agent's root; see DESIGN.md, "On the host".
const (
	StateFile    = "state.json"
	SocketFile   = "agent.sock"
	NotifySocket = "notify.sock"
	LockFile     = "agent.lock"
	AppsDir      = "apps"
	CacheDir     = "cache"
)

// App states (ferry.AppState).
const (
	AppInstalling = ferry.AppInstalling
	AppRunning    = ferry.AppRunning
	AppFailed     = ferry.AppFailed
	AppStopped    = ferry.AppStopped
)

// State is what the agent believes is installed and running: state.json,
// and the answer of its status socket.
type State struct {
	Host    string               `json:"host"`
	Agent   int                  `json:"agent_pid"`
	Desired string               `json:"desired"`
	Updated time.Time            `json:"updated"`
	Error   string               `json:"error,omitempty"` // reading the desired state
	Apps    map[string]*AppState `json:"apps"`
}

// AppState is one app on this host.
type AppState struct {
	Release string         `json:"release"`          // installed release id, e.g. v3-1a2b3c4d
	Label   string         `json:"label,omitempty"`  // the desired state's name for it
	Number  int            `json:"number,omitempty"` // the server's release number of Label
	SHA256  string         `json:"sha256"`
	State   ferry.AppState `json:"state"`
	Error   string         `json:"error,omitempty"`
	Failure *ferry.Failure `json:"failure,omitempty"` // Error as a value
	// Spec is the desired entry the running release was started from, so a
	// restarted agent knows whether the desired state changed. Its Env
	// (the app's config, secrets included) stays in memory and in the
	// release's env file: state.json keeps only its digest, SpecEnv.
	Spec    *desired.App `json:"spec,omitempty"`
	SpecEnv string       `json:"spec_env,omitempty"`
	// LastHealthy is the last release that passed its health checks here:
	// where the agent goes back to when a new one fails.
	LastHealthy string `json:"last_healthy,omitempty"`
	// Rejected is a desired entry whose release failed here; the agent does
	// not retry it until the desired state changes.
	Rejected    *desired.App       `json:"rejected,omitempty"`
	RejectedEnv string             `json:"rejected_env,omitempty"` // digest of Rejected's Env
	Processes   []supervise.Status `json:"processes"`
	Updated     time.Time          `json:"updated"`
}

// ReadState reads root's state.json; a missing file is an empty state.
func ReadState(root string) (*State, error) {
	st := &State{Apps: map[string]*AppState{}}
	b, err := os.ReadFile(filepath.Join(root, StateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("state: %s: %w", filepath.Join(root, StateFile), err)
	}
	if st.Apps == nil {
		st.Apps = map[string]*AppState{}
	}
	for _, as := range st.Apps {
		// A state.json from before digests: take them now, and forget the
		// values, which the release's env file holds.
		if as.Spec != nil && as.SpecEnv == "" {
			as.SpecEnv = EnvDigest(as.Spec.Env)
		}
		if as.Rejected != nil && as.RejectedEnv == "" {
			as.RejectedEnv = EnvDigest(as.Rejected.Env)
		}
		as.Spec, as.Rejected = withoutEnv(as.Spec), withoutEnv(as.Rejected)
	}
	return st, nil
}

// writeState writes st without the apps' config values: secrets exist on
// the host only in the release env files (0600), so state.json holds a
// digest of each entry's Env and nothing more.
func writeState(root string, st *State) error {
	out := *st
	out.Apps = make(map[string]*AppState, len(st.Apps))
	for name, as := range st.Apps {
		c := *as
		c.Spec, c.Rejected = withoutEnv(as.Spec), withoutEnv(as.Rejected)
		out.Apps[name] = &c
	}
	b, err := json.MarshalIndent(&out, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFile(filepath.Join(root, StateFile), append(b, '\n'), 0o600)
}

func withoutEnv(a *desired.App) *desired.App {
	if a == nil || a.Env == nil {
		return a
	}
	c := *a
	c.Env = nil
	return &c
}

// EnvDigest is the sha256 of an app's config, for telling whether it
// changed without keeping it: sorted KEY=VALUE lines, NUL-separated (a
// value holds no NUL).
func EnvDigest(env map[string]string) string {
	h := sha256.New()
	for _, k := range slices.Sorted(maps.Keys(env)) {
		h.Write([]byte(k + "=" + env[k] + "\x00"))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// sameRequest reports whether want asks for what entry (whose config had
// digest env) asked for.
func sameRequest(entry *desired.App, env string, want *desired.App) bool {
	if entry == nil || want == nil {
		return false
	}
	a, b := *entry, *want
	a.Env, b.Env = nil, nil
	return a.Equal(b) && env == EnvDigest(want.Env)
}

// runs reports whether the running release was started from want.
func (as *AppState) runs(want *desired.App) bool { return sameRequest(as.Spec, as.SpecEnv, want) }

// rejects reports whether want is the entry this host rejected.
func (as *AppState) rejects(want *desired.App) bool {
	return sameRequest(as.Rejected, as.RejectedEnv, want)
}

// Redacted is st with every config value masked, for what leaves the host
// or is shown (reports, agent status): the apps' config may hold secrets,
// which only the release env files (0600) keep.
func (st *State) Redacted() *State {
	out := *st
	out.Apps = make(map[string]*AppState, len(st.Apps))
	for name, as := range st.Apps {
		c := *as
		c.Spec, c.Rejected = redactApp(as.Spec), redactApp(as.Rejected)
		out.Apps[name] = &c
	}
	return &out
}

func redactApp(a *desired.App) *desired.App {
	if a == nil || len(a.Env) == 0 {
		return a
	}
	c := *a
	c.Env = make(map[string]string, len(a.Env))
	for k := range a.Env {
		c.Env[k] = desired.Masked
	}
	return &c
}

// started records want (whose config had digest env) as what the running
// release was started from.
func (as *AppState) started(want *desired.App, env string) { as.Spec, as.SpecEnv = want, env }

// reject records want as the entry that failed here.
func (as *AppState) reject(want *desired.App) {
	as.Rejected, as.RejectedEnv = want, EnvDigest(want.Env)
}

// Report is st as the wire contract has it (api.HostReport), config
// masked: what the agent reports to its server. What only the agent
// needs — how to adopt its processes, config digests — stays here.
func (st *State) Report() api.HostReport {
	r := st.Redacted()
	out := api.HostReport{Host: r.Host, Agent: r.Agent, Desired: r.Desired, Updated: r.Updated, Error: r.Error,
		OS: runtime.GOOS, Arch: runtime.GOARCH, Apps: make(map[string]*api.AppStatus, len(r.Apps))}
	for name, as := range r.Apps {
		a := &api.AppStatus{
			Release: as.Release, Label: as.Label, Number: as.Number, SHA256: as.SHA256, State: as.State, Error: as.Error, Failure: as.Failure,
			Spec: as.Spec, LastHealthy: as.LastHealthy, Rejected: as.Rejected, Updated: as.Updated, Processes: make([]api.ProcessStatus, 0, len(as.Processes)),
		}
		for _, p := range as.Processes {
			a.Processes = append(a.Processes, api.ProcessStatus{
				Process: p.Process, Instance: p.Instance, State: p.State, PID: p.PID, Started: p.Started, Port: p.Port,
				Restarts: p.Restarts, Health: p.Health, Ready: p.Ready, Release: p.Release, LastError: p.LastError,
				CrashLoop: p.CrashLoop, NextStart: p.NextStart,
			})
		}
		out.Apps[name] = a
	}
	return out
}
