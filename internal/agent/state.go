package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

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

// App states.
const (
	AppInstalling = "installing"
	AppRunning    = "running"
	AppFailed     = "failed"
	AppStopped    = "stopped"
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
	Release string `json:"release"`         // installed release id, e.g. v3-1a2b3c4d
	Label   string `json:"label,omitempty"` // the desired state's name for it
	SHA256  string `json:"sha256"`
	State   string `json:"state"`
	Error   string `json:"error,omitempty"`
	// Spec is the desired entry the running release was started from, so a
	// restarted agent knows whether the desired state changed.
	Spec *desired.App `json:"spec,omitempty"`
	// LastHealthy is the last release that passed its health checks here:
	// where the agent goes back to when a new one fails.
	LastHealthy string `json:"last_healthy,omitempty"`
	// Rejected is a desired entry whose release failed here; the agent does
	// not retry it until the desired state changes.
	Rejected  *desired.App       `json:"rejected,omitempty"`
	Processes []supervise.Status `json:"processes"`
	Updated   time.Time          `json:"updated"`
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
	return st, nil
}

func writeState(root string, st *State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	// 0600: it holds the apps' config, secrets included, as the release
	// env files do; what leaves the host is Redacted.
	return fsutil.WriteFile(filepath.Join(root, StateFile), append(b, '\n'), 0o600)
}

// Redacted is st with every config value masked, for what leaves the host
// or is shown (reports, agent status): the apps' config may hold secrets,
// which only the release env files and state.json (both 0600) keep.
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
