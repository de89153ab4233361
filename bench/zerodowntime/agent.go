package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ferrydeploy/ferry/internal/fsutil"
)

// artifactRef is one built version of the app.
type artifactRef struct {
	Version, Path, SHA256 string
}

// appDir writes a copy of examples/hello that `ferry build` packs with the
// hello binary built once (so N versions cost N packs, not N compiles, and
// the copy needs no Go module of its own), with its ferry.yaml changed
// only where the harness must: build, include, the port and upgrade:.
func (e *env) appDir(mode string, port int) (string, error) {
	dir := filepath.Join(e.work, "app-"+mode)
	src := filepath.Join(e.repo, "examples", "hello")
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		return "", err
	}
	if b, err := exec.Command("cp", "-R", filepath.Join(src, "static"), dir).CombinedOutput(); err != nil {
		return "", fmt.Errorf("copy static/: %v: %s", err, b)
	}
	bin, err := os.ReadFile(e.hello)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "hello"), bin, 0o755); err != nil {
		return "", err
	}
	y, err := os.ReadFile(filepath.Join(src, "ferry.yaml"))
	if err != nil {
		return "", err
	}
	out, err := rewriteYAML(string(y), port, mode)
	if err != nil {
		return "", err
	}
	return dir, os.WriteFile(filepath.Join(dir, "ferry.yaml"), []byte(out), 0o644)
}

var (
	reGoBuild = regexp.MustCompile(`(?m)^(\s+)go:\s*\S+\s*$`)
	reInclude = regexp.MustCompile(`(?m)^include:\s*\[`)
	rePort    = regexp.MustCompile(`(?m)^(\s+)port:\s*\d+\s*$`)
	reUpgrade = regexp.MustCompile(`(?m)^\s+upgrade:.*\n`)
	reStopTO  = regexp.MustCompile(`(?m)^\s+stop_timeout:.*\n`)
)

// rewriteYAML is hello's ferry.yaml with a prebuilt binary, port and mode.
// stop_timeout is 3s so a release that ignores SIGTERM costs 3s, not 30.
func rewriteYAML(y string, port int, mode string) (string, error) {
	if !reGoBuild.MatchString(y) || !reInclude.MatchString(y) || !rePort.MatchString(y) {
		return "", fmt.Errorf("examples/hello/ferry.yaml changed shape (want build.go, include: [...] and one web port:); update rewriteYAML")
	}
	y = reGoBuild.ReplaceAllString(y, `${1}command: "true"`)
	y = reInclude.ReplaceAllString(y, "include: [bin/, ")
	y = reUpgrade.ReplaceAllString(y, "")
	y = reStopTO.ReplaceAllString(y, "")
	y = rePort.ReplaceAllString(y, fmt.Sprintf("${1}port: %d\n${1}upgrade: %s\n${1}stop_timeout: 3s", port, mode))
	return y, nil
}

// buildVersions packs n versions of the app in dir.
func (e *env) buildVersions(ctx context.Context, dir, prefix string, n int) ([]artifactRef, error) {
	dist := filepath.Join(e.work, "dist-"+filepath.Base(dir))
	var out []artifactRef
	for k := 1; k <= n; k++ {
		v := fmt.Sprintf("%s%d", prefix, k)
		cmd := exec.CommandContext(ctx, e.ferry, "build", dir, "--version", v, "--dist", dist, "-o", "json")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("ferry build %s: %v\n%s", v, err, stderr.String())
		}
		var r struct{ Path, SHA256 string }
		if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("ferry build -o json: %v: %s", err, stdout.String())
		}
		out = append(out, artifactRef{v, r.Path, r.SHA256})
	}
	return out, nil
}

// builtApp is an app copy's port (in its ferry.yaml) and its versions.
type builtApp struct {
	port int
	arts []artifactRef
}

// versions packs the versions of mode's app copy once; every run of the
// mode reuses them, each in a new agent root.
func (e *env) versions(ctx context.Context, mode string) (*builtApp, error) {
	if b := e.built[mode]; b != nil {
		return b, nil
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dir, err := e.appDir(mode, port)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(e.log, "   packing %d versions\n", e.cfg.Upgrades+1)
	arts, err := e.buildVersions(ctx, dir, "v", e.cfg.Upgrades+1)
	if err != nil {
		return nil, err
	}
	if e.built == nil {
		e.built = map[string]*builtApp{}
	}
	e.built[mode] = &builtApp{port, arts}
	return e.built[mode], nil
}

// badEnv is the switch that makes upgrade k (1-based) a bad release in
// mode. Handoff gets no SIGTERM-ignoring release: an app that shares the
// listening socket and ignores SIGTERM goes on accepting from it until
// SIGKILL, which then cuts what it holds, and no supervisor can stop that
// (only the app can stop accepting). The proxy can, and gets all three.
func badEnv(on bool, mode string, k int) string {
	if !on || k%4 != 0 {
		return ""
	}
	bad := []string{"HELLO_CRASH", "HELLO_NOT_READY", "HELLO_IGNORE_TERM"}
	if mode == "handoff" {
		bad = bad[:2]
	}
	return bad[(k/4-1)%len(bad)]
}

// Agent events: what happens to the agent itself between two upgrades.
const (
	evUpgrade = "upgrade" // ferry agent upgrade (SIGHUP): the new binary takes over
	evRestart = "restart" // SIGTERM, what systemctl restart sends, then a new agent
	evKill    = "kill"    // SIGKILL, then a new agent
)

// agentEvents spreads the agent's events evenly over a run of upgrades,
// interleaved (upgrade, restart, kill, upgrade, …): the events that
// happen just before upgrade k, by k.
func agentEvents(upgrades, selfUpgrades, restarts, kills int) map[int][]string {
	left := map[string]int{evUpgrade: selfUpgrades, evRestart: restarts, evKill: kills}
	total := selfUpgrades + restarts + kills
	out := map[int][]string{}
	for j := 0; j < total; {
		for _, ev := range []string{evUpgrade, evRestart, evKill} {
			if left[ev] == 0 || j == total {
				continue
			}
			left[ev]--
			k := max(1, (j+1)*upgrades/(total+1))
			out[k] = append(out[k], ev)
			j++
		}
	}
	return out
}

// selfUpgrade runs `ferry agent upgrade` and returns the new agent's pid.
func (e *env) selfUpgrade(ctx context.Context, root string, pid int) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, e.ferry, "agent", "upgrade", "--root", root).CombinedOutput()
	if err != nil {
		return pid, fmt.Errorf("ferry agent upgrade: %v: %s", err, out)
	}
	st, err := e.status(ctx, root)
	if err != nil {
		return pid, err
	}
	if st.Agent == pid || st.Agent == 0 {
		return pid, fmt.Errorf("ferry agent upgrade said %q but the agent's pid is still %d", strings.TrimSpace(string(out)), st.Agent)
	}
	return st.Agent, nil
}

// alive reports whether pid runs (a zombie does not).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return !strings.HasPrefix(rest, "Z")
}

// writeDesired replaces the desired-state file atomically.
func writeDesired(path string, a *artifactRef, bad string, scale int) error {
	doc := "apps: {}\n"
	if a != nil {
		doc = fmt.Sprintf("apps:\n  hello:\n    artifact: %q\n    sha256: %q\n    release: %q\n    scale: {web: %d}\n",
			"file://"+a.Path, a.SHA256, a.Version, scale)
		if bad != "" {
			doc += fmt.Sprintf("    env: {%s: \"1\"}\n", bad)
		}
	}
	return fsutil.WriteFile(path, []byte(doc), 0o644)
}

// agentStatus is the part of `ferry agent status -o json` the harness reads.
type agentStatus struct {
	Agent int `json:"agent_pid"`
	Apps  map[string]struct {
		Release  string `json:"release"`
		Label    string `json:"label"`
		SHA256   string `json:"sha256"`
		State    string `json:"state"`
		Error    string `json:"error"`
		Rejected *struct {
			SHA256 string `json:"sha256"`
		} `json:"rejected"`
		Processes []struct {
			PID    int    `json:"pid"`
			State  string `json:"state"`
			Health string `json:"health"`
		} `json:"processes"`
	} `json:"apps"`
}

func (e *env) status(ctx context.Context, root string) (*agentStatus, error) {
	cmd := exec.CommandContext(ctx, e.ferry, "agent", "status", "--root", root, "-o", "json")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("ferry agent status: %v: %s", err, stderr.String())
	}
	var st agentStatus
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("ferry agent status -o json: %v", err)
	}
	return &st, nil
}

// waitStatus polls status until cond says done (returning what it says)
// or the deadline passes.
func (e *env) waitStatus(ctx context.Context, root string, within time.Duration, cond func(*agentStatus) (string, bool)) (string, error) {
	deadline := time.Now().Add(within)
	var last string
	for {
		st, err := e.status(ctx, root)
		if err == nil {
			if out, ok := cond(st); ok {
				return out, nil
			}
			b, _ := json.Marshal(st)
			last = string(b)
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return "", fmt.Errorf("not within %v; last status: %s", within, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// upgraded is the status condition of a finished upgrade to sha: it runs
// healthy (outcome "running", and the release's name that answers as
// X-Release: its FERRY_RELEASE, the desired state's label, else its id),
// or the agent rejected it and what it went back to is healthy again
// (outcome "rejected").
func upgraded(sha string, scale int) func(*agentStatus) (string, bool) {
	return func(st *agentStatus) (string, bool) {
		a, ok := st.Apps["hello"]
		if !ok {
			return "", false
		}
		healthy := len(a.Processes) >= scale
		for _, p := range a.Processes {
			healthy = healthy && p.PID > 0 && p.Health == "healthy"
		}
		switch {
		case a.SHA256 == sha && a.State == "running" && healthy:
			name := a.Label
			if name == "" {
				name = a.Release
			}
			return "running " + name, true
		case a.Rejected != nil && a.Rejected.SHA256 == sha && a.State != "installing" && healthy:
			return "rejected", true
		}
		return "", false
	}
}

// runAgent is one run of the real agent in mode: v1 up, load, then
// -upgrades upgrades through the desired-state file, each waited for.
func (e *env) runAgent(ctx context.Context, s *Subject, mode string, i int) *Run {
	r := &Run{}
	fail := func(format string, a ...any) *Run {
		r.Errors = append(r.Errors, fmt.Sprintf(format, a...))
		return r
	}
	built, err := e.versions(ctx, mode)
	if err != nil {
		return fail("%v", err)
	}
	port, arts := built.port, built.arts
	runDir := filepath.Join(e.work, fmt.Sprintf("agent-%s-%d", mode, i))
	root, desired := filepath.Join(runDir, "root"), filepath.Join(runDir, "desired.yaml")
	os.MkdirAll(root, 0o755)
	if err := writeDesired(desired, &arts[0], "", e.cfg.Scale); err != nil {
		return fail("%v", err)
	}
	logf, err := os.Create(filepath.Join(runDir, "agent.log"))
	if err != nil {
		return fail("%v", err)
	}
	defer logf.Close()
	args := []string{"agent", "--root", root, "--desired", desired, "--health-timeout", e.cfg.HealthTimeout.String()}
	agent, err := startAgentProc(e.ferry, args, logf)
	if err != nil {
		return fail("start agent: %v", err)
	}
	defer func() {
		// Stop the app first (the agent leaves apps running when it
		// stops), then the agent; whatever is left is a leak.
		if err := writeDesired(desired, nil, "", 0); err == nil {
			if _, err := e.waitStatus(context.WithoutCancel(ctx), root, 60*time.Second, func(st *agentStatus) (string, bool) {
				return "", len(st.Apps["hello"].Processes) == 0
			}); err != nil {
				r.Errors = append(r.Errors, "stopping the app: "+err.Error())
			}
		}
		r.Leaked = leaked(root)
		if err := agent.stop(syscall.SIGTERM, 10*time.Second); err != nil {
			r.Errors = append(r.Errors, err.Error())
		}
		// The proxy process exits once it holds no port, which it does not
		// since the app stopped.
		if p := proxyLeft(root, 10*time.Second); p != "" {
			r.Leaked = append(r.Leaked, p)
		}
		killLeaks(r.Leaked)
		if len(r.Errors) > 0 {
			b, _ := os.ReadFile(logf.Name())
			fmt.Fprintf(e.log, "   agent log tail:\n%s\n", tail(string(b), 2000))
		}
	}()
	first, err := e.waitStatus(ctx, root, 60*time.Second, upgraded(arts[0].SHA256, e.cfg.Scale))
	if err != nil {
		return fail("first release: %v", err)
	}
	r.Expected = append(r.Expected, strings.TrimPrefix(first, "running "))
	r.FDsBefore = countFDs(agent.pid)

	l := startLoad(ctx, e.loadConfig(port))
	time.Sleep(time.Second)
	events := agentEvents(e.cfg.Upgrades, e.cfg.AgentUpgrades, e.cfg.AgentRestarts, e.cfg.AgentKills)
	current := arts[0].SHA256 // what the agent runs, healthy
	for k := 1; k <= e.cfg.Upgrades && ctx.Err() == nil; k++ {
		var evErr error
		for _, ev := range events[k] {
			t0 := time.Now()
			before := agent.pid
			switch ev {
			case evUpgrade:
				var pid int
				if pid, evErr = e.selfUpgrade(ctx, root, agent.pid); evErr == nil {
					agent = &agentProc{pid: pid} // no child of the harness
					r.AgentUpgrades = append(r.AgentUpgrades, fmt.Sprintf("pid %d → %d in %.2f s", before, pid, time.Since(t0).Seconds()))
				}
			case evRestart, evKill:
				sig := syscall.SIGTERM
				if ev == evKill {
					sig = syscall.SIGKILL
				}
				if agent, evErr = e.restartAgent(ctx, agent, sig, args, logf, root, current); evErr == nil {
					r.AgentRestarts = append(r.AgentRestarts, fmt.Sprintf("%s: pid %d → %d, adopted in %.2f s", ev, before, agent.pid, time.Since(t0).Seconds()))
				}
			}
			if evErr != nil {
				r.Errors = append(r.Errors, evErr.Error())
				break
			}
		}
		if evErr != nil {
			break
		}
		a := arts[k]
		bad := badEnv(e.cfg.Bad, mode, k)
		t0 := time.Now()
		u := Upgrade{Version: a.Version, Bad: bad}
		if err := writeDesired(desired, &a, bad, e.cfg.Scale); err != nil {
			r.Errors = append(r.Errors, err.Error())
			break
		}
		out, err := e.waitStatus(ctx, root, e.cfg.HealthTimeout+60*time.Second, upgraded(a.SHA256, e.cfg.Scale))
		u.Secs = time.Since(t0).Round(time.Millisecond).Seconds()
		if err != nil {
			u.Outcome = "error: " + err.Error()
			r.Upgrades = append(r.Upgrades, u)
			r.Errors = append(r.Errors, fmt.Sprintf("upgrade to %s: %v", a.Version, err))
			break
		}
		u.Outcome = out
		if rel, ok := strings.CutPrefix(out, "running "); ok {
			u.Outcome, u.Release = "running", rel
			r.Expected = append(r.Expected, rel)
			current = a.SHA256
		}
		r.Upgrades = append(r.Upgrades, u)
		time.Sleep(spacing(e.rng, e.cfg.SpacingMin, e.cfg.SpacingMax))
	}
	time.Sleep(time.Second)
	finish(r, l)
	time.Sleep(500 * time.Millisecond) // the agent's proxy sees the clients' conns close
	r.FDsAfter = countFDs(agent.pid)
	return r
}

// agentProc is the running agent: a child of the harness, or (after an
// upgrade) the process the old agent started.
type agentProc struct {
	pid  int
	cmd  *exec.Cmd     // nil when not the harness's child
	done chan struct{} // closed when cmd has exited
}

func startAgentProc(ferry string, args []string, log *os.File) (*agentProc, error) {
	cmd := exec.Command(ferry, args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	a := &agentProc{pid: cmd.Process.Pid, cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(a.done) }()
	return a, nil
}

// stop signals the agent and waits (up to within for SIGTERM) until it has
// exited; then SIGKILL.
func (a *agentProc) stop(sig syscall.Signal, within time.Duration) error {
	syscall.Kill(a.pid, sig)
	gone := func() bool {
		if a.cmd != nil {
			select {
			case <-a.done:
				return true
			default:
				return false
			}
		}
		return !alive(a.pid)
	}
	deadline := time.Now().Add(within)
	for !gone() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if gone() {
		return nil
	}
	syscall.Kill(a.pid, syscall.SIGKILL)
	for !gone() {
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("the agent (pid %d) ignored %v for %v", a.pid, sig, within)
}

// restartAgent stops the agent with sig (SIGTERM: what systemctl restart
// sends; SIGKILL: a crash), starts a new one at once, as a supervisor
// does, and waits until it has adopted the app: sha running, every
// instance healthy, the same pids as before.
func (e *env) restartAgent(ctx context.Context, a *agentProc, sig syscall.Signal, args []string, log *os.File, root, sha string) (*agentProc, error) {
	st, err := e.status(ctx, root)
	if err != nil {
		return a, err
	}
	var before []int
	for _, p := range st.Apps["hello"].Processes {
		before = append(before, p.PID)
	}
	fmt.Fprintf(log, "---- harness: %v to the agent (pid %d)\n", sig, a.pid)
	if err := a.stop(sig, 30*time.Second); err != nil {
		return a, err
	}
	n, err := startAgentProc(e.ferry, args, log)
	if err != nil {
		return a, fmt.Errorf("start agent after %v: %v", sig, err)
	}
	_, err = e.waitStatus(ctx, root, 60*time.Second, func(st *agentStatus) (string, bool) {
		app := st.Apps["hello"]
		if st.Agent != n.pid || app.SHA256 != sha || len(app.Processes) != len(before) {
			return "", false
		}
		for k, p := range app.Processes {
			if p.PID != before[k] || p.Health != "healthy" {
				return "", false
			}
		}
		return "", true
	})
	if err != nil {
		return n, fmt.Errorf("after %v the new agent (pid %d) did not adopt the instances %v: %v", sig, n.pid, before, err)
	}
	return n, nil
}

// proxyLeft says which proxy process of root still runs (its working
// directory is the root) once within has passed, if one does: it exits by
// itself once it holds no port.
func proxyLeft(root string, within time.Duration) string {
	deadline := time.Now().Add(within)
	for {
		var left string
		ents, _ := os.ReadDir("/proc")
		for _, d := range ents {
			pid, err := strconv.Atoi(d.Name())
			if err != nil || !alive(pid) {
				continue
			}
			if cwd, err := os.Readlink(filepath.Join("/proc", d.Name(), "cwd")); err == nil && cwd == root {
				cmd, _ := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
				left = fmt.Sprintf("%d %s", pid, strings.ReplaceAll(strings.TrimRight(string(cmd), "\x00"), "\x00", " "))
			}
		}
		if left == "" || time.Now().After(deadline) {
			return left
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (e *env) loadConfig(port int) loadConfig {
	c := e.cfg.Load
	c.Addr = "127.0.0.1:" + strconv.Itoa(port)
	return c
}

// leaked lists the processes still running a program from under root:
// the agent stopped the app, so there must be none.
func leaked(root string) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, d := range ents {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", d.Name(), "exe"))
		if err != nil || !strings.HasPrefix(exe, root+"/") {
			continue
		}
		cmd, _ := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		out = append(out, fmt.Sprintf("%d %s", pid, strings.ReplaceAll(strings.TrimRight(string(cmd), "\x00"), "\x00", " ")))
	}
	return out
}

// killLeaks cleans up after leaked, by pid: the harness started them
// through its agent.
func killLeaks(procs []string) {
	for _, p := range procs {
		if pid, err := strconv.Atoi(strings.Fields(p)[0]); err == nil {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func countFDs(pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return len(ents)
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
