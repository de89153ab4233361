package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// status is the part of `ferry agent status -o json` (the agent's
// GET /v1/status on ROOT/agent.sock) the bench reads.
type status struct {
	AgentPID int `json:"agent_pid"`
	Apps     map[string]struct {
		Release, SHA256, State, Error string
		Processes                     []struct {
			Process  string
			Instance int
			State    string
			PID      int
			Health   string
			Restarts int
		}
	}
}

// running reports whether app runs sha with n instances, all healthy.
func (st *status) running(app, sha string, n int) bool {
	a, ok := st.Apps[app]
	if !ok || a.State != "running" || a.SHA256 != sha || len(a.Processes) != n {
		return false
	}
	for _, p := range a.Processes {
		if p.PID == 0 || p.Health != "healthy" {
			return false
		}
	}
	return true
}

// pids are app's instance pids, sorted.
func (st *status) pids(app string) []int {
	var out []int
	for _, p := range st.Apps[app].Processes {
		if p.PID > 0 {
			out = append(out, p.PID)
		}
	}
	slices.Sort(out)
	return out
}

// agentProc is a running `ferry agent` and a keep-alive client of its
// status socket.
type agentProc struct {
	cmd     *exec.Cmd
	root    string
	desired string
	log     string
	client  *http.Client
	exited  chan struct{}
}

func startAgent(ferry, root, desired, logPath string, env []string) (*agentProc, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(ferry, "agent", "--root", root, "--desired", desired)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	sock := filepath.Join(root, "agent.sock")
	a := &agentProc{cmd: cmd, root: root, desired: desired, log: logPath, exited: make(chan struct{}),
		client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", sock)
			},
			MaxIdleConnsPerHost: 1,
		}}}
	go func() { cmd.Wait(); logf.Close(); close(a.exited) }()
	return a, nil
}

func (a *agentProc) pid() int { return a.cmd.Process.Pid }

// status asks the agent for its live state, as `ferry agent status -o json`
// does.
func (a *agentProc) status(ctx context.Context) (*status, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://agent/v1/status", nil)
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("agent status: %s", resp.Status)
	}
	st := &status{}
	if err := json.NewDecoder(resp.Body).Decode(st); err != nil {
		return nil, fmt.Errorf("agent status: %w", err)
	}
	return st, nil
}

// until polls the status every interval until cond holds, the agent exits
// or d passes.
func (a *agentProc) until(ctx context.Context, what string, d, interval time.Duration, cond func(*status) bool) (*status, error) {
	deadline := time.Now().Add(d)
	var last *status
	var lastErr error
	for {
		st, err := a.status(ctx)
		if err == nil && cond(st) {
			return st, nil
		}
		if st != nil {
			last = st
		}
		lastErr = err
		select {
		case <-a.exited:
			return nil, fmt.Errorf("%s: the agent exited (%v); its log:\n%s", what, a.cmd.ProcessState, tail(a.log, 3000))
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(interval):
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s: not within %v; last status %s (err %v); agent log:\n%s", what, d, describe(last), lastErr, tail(a.log, 3000))
		}
	}
}

// stop empties the desired state, waits (bounded) for the apps to stop,
// then SIGTERMs the agent; whatever app process is left is SIGKILLed by
// process group, so the bench never leaves processes behind.
func (a *agentProc) stop(writeDoc func(string) error) {
	var pids []int
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if st, err := a.status(ctx); err == nil {
		for app := range st.Apps {
			pids = append(pids, st.pids(app)...)
		}
	}
	if writeDoc("apps: {}\n") == nil {
		a.until(ctx, "apps stopped", 30*time.Second, 50*time.Millisecond, func(st *status) bool {
			for _, as := range st.Apps {
				if len(as.Processes) > 0 {
					return false
				}
			}
			return true
		})
	}
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.exited:
	case <-time.After(20 * time.Second):
		a.cmd.Process.Kill()
		<-a.exited
	}
	for _, pid := range pids {
		if alive(pid) {
			syscall.Kill(-pid, syscall.SIGKILL)
		}
	}
	// Also whatever the status did not name (the agent died, or answered
	// no more): every process whose working directory is under the root.
	for _, pid := range under(a.root) {
		syscall.Kill(-pid, syscall.SIGKILL)
		syscall.Kill(pid, syscall.SIGKILL)
	}
	a.client.CloseIdleConnections()
}

func describe(st *status) string {
	if st == nil {
		return "<none>"
	}
	var b strings.Builder
	for _, name := range sortedKeys(st.Apps) {
		as := st.Apps[name]
		fmt.Fprintf(&b, "[%s %s %s err=%q", name, as.Release, as.State, as.Error)
		for _, p := range as.Processes {
			fmt.Fprintf(&b, " %s.%d:%s/%d/%s", p.Process, p.Instance, p.State, p.PID, p.Health)
		}
		b.WriteString("] ")
	}
	return b.String()
}

func sortedKeys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func tail(p string, n int) string {
	b, _ := os.ReadFile(p)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
