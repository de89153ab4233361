package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Results is the whole output, also written as JSON.
type Results struct {
	Date       string     `json:"date"`
	Machine    string     `json:"machine"`
	Command    string     `json:"command"`
	Subjects   []*Subject `json:"subjects"`
	AsExpected bool       `json:"as_expected"`
}

// Subject is one thing under test: an agent upgrade mode or a control.
type Subject struct {
	Name string `json:"name"`
	// Expect is "pass" (must lose nothing), "fail" (a negative control:
	// must lose requests, or the harness cannot see failures) or "" (shown
	// for comparison only).
	Expect     string `json:"expect"`
	Runs       []*Run `json:"runs"`
	Verdict    string `json:"verdict"` // PASS or FAIL over all runs
	AsExpected bool   `json:"as_expected"`
	Note       string `json:"note,omitempty"`
}

// Run is one run of a subject.
type Run struct {
	Clients  map[string]*clientStats `json:"clients"`
	Backlog  int64                   `json:"open_loop_backlog"` // open-loop sends skipped, too many in flight
	Upgrades []Upgrade               `json:"upgrades"`
	Expected []string                `json:"expected_versions"` // versions that were up and must have answered
	Unserved []string                `json:"unserved_versions"`
	// Strays are answers from versions that were never up: in the agent
	// runs, releases it rejected (a never-ready release must not serve).
	Strays    map[string]int `json:"stray_versions,omitempty"`
	Leaked    []string       `json:"leaked_processes,omitempty"`
	FDsBefore int            `json:"agent_fds_before,omitempty"`
	FDsAfter  int            `json:"agent_fds_after,omitempty"`
	// AgentUpgrades are the agent's own upgrades during the run.
	AgentUpgrades []string `json:"agent_upgrades,omitempty"`
	// AgentRestarts are the times the agent was stopped (SIGTERM) or
	// killed (SIGKILL) and a new one adopted the app.
	AgentRestarts []string `json:"agent_restarts,omitempty"`
	LoadSecs      float64  `json:"load_seconds"`
	Errors        []string `json:"errors,omitempty"` // the harness could not do what it meant to
	Verdict       string   `json:"verdict"`
	Why           []string `json:"why,omitempty"`
}

// Upgrade is one step of a run.
type Upgrade struct {
	Version string  `json:"version"`
	Bad     string  `json:"bad,omitempty"` // HELLO_CRASH etc.
	Outcome string  `json:"outcome"`       // running, rejected, swapped, deployed, or an error
	Release string  `json:"release,omitempty"`
	Secs    float64 `json:"seconds"`
}

func (r *Run) failures() int {
	n := 0
	for _, c := range r.Clients {
		n += c.failures()
	}
	return n
}

// judge sets the run's verdict: no failed request of any class, every
// version that was up answered, nothing leaked, the harness did all it
// meant to, and every client was supported. An unsupported client is
// named but does not fail the run: the app, not the upgrade, lacks it.
func (r *Run) judge(withUpgrades bool) {
	served := map[string]bool{}
	total := 0
	for _, c := range r.Clients {
		for v := range c.Versions {
			served[v] = true
		}
		total += c.Classes[classOK]
	}
	r.Unserved, r.Strays = nil, nil
	expected := map[string]bool{}
	for _, v := range r.Expected {
		expected[v] = true
	}
	for _, c := range r.Clients {
		for v, n := range c.Versions {
			if !expected[v] {
				if r.Strays == nil {
					r.Strays = map[string]int{}
				}
				r.Strays[v] += n
			}
		}
	}
	for _, v := range r.Expected {
		if !served[v] {
			r.Unserved = append(r.Unserved, v)
		}
	}
	r.Why = nil
	if n := r.failures(); n > 0 {
		r.Why = append(r.Why, fmt.Sprintf("%d failed requests", n))
	}
	if total == 0 {
		r.Why = append(r.Why, "no request succeeded")
	}
	if len(r.Unserved) > 0 {
		r.Why = append(r.Why, fmt.Sprintf("%d versions never answered", len(r.Unserved)))
	}
	if len(r.Strays) > 0 {
		r.Why = append(r.Why, fmt.Sprintf("answers from versions that were never up: %v", r.Strays))
	}
	if len(r.Leaked) > 0 {
		r.Why = append(r.Why, fmt.Sprintf("%d processes leaked", len(r.Leaked)))
	}
	if r.Backlog > 0 {
		r.Why = append(r.Why, fmt.Sprintf("%d open-loop sends skipped (over 4096 in flight)", r.Backlog))
	}
	if len(r.Errors) > 0 {
		r.Why = append(r.Why, fmt.Sprintf("%d harness errors", len(r.Errors)))
	}
	if withUpgrades && len(r.Upgrades) == 0 {
		r.Why = append(r.Why, "no upgrade happened")
	}
	r.Verdict = "PASS"
	if len(r.Why) > 0 {
		r.Verdict = "FAIL"
	}
}

func (s *Subject) judge() {
	s.Verdict = "PASS"
	for _, r := range s.Runs {
		if r.Verdict != "PASS" {
			s.Verdict = "FAIL"
		}
	}
	if len(s.Runs) == 0 {
		s.Verdict = "FAIL"
	}
	switch s.Expect {
	case "pass":
		s.AsExpected = s.Verdict == "PASS"
	case "fail":
		// A negative control must lose requests in every run, not merely
		// trip some other check.
		s.AsExpected = len(s.Runs) > 0
		for _, r := range s.Runs {
			if r.failures() == 0 {
				s.AsExpected = false
			}
		}
	default:
		s.AsExpected = true
	}
}

// env is what every subject shares: binaries and the scratch directory.
type env struct {
	cfg   config
	work  string
	ferry string
	hello string // examples/hello/cmd/hello, built once
	repo  string
	log   io.Writer
	rng   *rand.Rand
	built map[string]*builtApp // versions packed per agent mode
}

func run(ctx context.Context, cfg config, log io.Writer) (*Results, error) {
	res := &Results{
		Date:    time.Now().UTC().Format(time.RFC3339),
		Machine: machine(),
		Command: strings.Join(os.Args, " "),
	}
	for _, m := range cfg.Modes {
		if !slices.Contains([]string{"proxy", "handoff", "stop-start"}, m) {
			return nil, fmt.Errorf("-mode %q: use proxy, handoff or stop-start", m)
		}
	}
	for _, c := range cfg.Controls {
		if !slices.Contains([]string{"reuseport", "kamal", "direct"}, c) {
			return nil, fmt.Errorf("-control %q: use reuseport, kamal or direct", c)
		}
	}
	if slices.Contains(cfg.Controls, "kamal") && cfg.Kamal == "" {
		return nil, fmt.Errorf("-control kamal needs -kamal PATH (bench/README.md says how to build kamal-proxy)")
	}
	e, err := newEnv(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	defer func() {
		if !cfg.Keep && cfg.Work == "" {
			os.RemoveAll(e.work)
		} else {
			fmt.Fprintf(log, "scratch directory kept: %s\n", e.work)
		}
	}()
	type subj struct {
		name, expect string
		once         func(context.Context, *Subject, int) *Run
	}
	var todo []subj
	for _, c := range cfg.Controls {
		if c == "direct" {
			todo = append(todo, subj{"direct", "pass", e.runDirect})
		}
	}
	for _, m := range cfg.Modes {
		expect := "pass"
		if m == "stop-start" {
			expect = "fail"
		}
		todo = append(todo, subj{"agent " + m, expect, func(ctx context.Context, s *Subject, i int) *Run { return e.runAgent(ctx, s, m, i) }})
	}
	for _, c := range cfg.Controls {
		switch c {
		case "reuseport":
			todo = append(todo, subj{"reuseport", "fail", e.runReuseport})
		case "kamal":
			todo = append(todo, subj{"kamal-proxy", "", e.runKamal})
		}
	}
	res.AsExpected = true
	for _, t := range todo {
		s := &Subject{Name: t.name, Expect: t.expect}
		runs := cfg.Runs
		if t.name == "direct" {
			runs = 1
		}
		for i := 1; i <= runs && ctx.Err() == nil; i++ {
			fmt.Fprintf(log, "== %s, run %d/%d\n", t.name, i, runs)
			r := t.once(ctx, s, i)
			r.judge(t.name != "direct")
			fmt.Fprintf(log, "   %s: %d requests, %d failed; %s\n", r.Verdict, sumRequests(r), r.failures(), strings.Join(r.Why, "; "))
			s.Runs = append(s.Runs, r)
		}
		s.judge()
		res.Subjects = append(res.Subjects, s)
		res.AsExpected = res.AsExpected && s.AsExpected
	}
	return res, ctx.Err()
}

func sumRequests(r *Run) int {
	n := 0
	for _, c := range r.Clients {
		n += c.Requests
	}
	return n
}

func newEnv(ctx context.Context, cfg config, log io.Writer) (*env, error) {
	e := &env{cfg: cfg, log: log, rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))}
	var err error
	if e.repo, err = findRepo(cfg.Repo); err != nil {
		return nil, err
	}
	e.work = cfg.Work
	if e.work == "" {
		if e.work, err = os.MkdirTemp("", "zerodowntime-"); err != nil {
			return nil, err
		}
	} else if err := os.MkdirAll(e.work, 0o755); err != nil {
		return nil, err
	}
	e.ferry = cfg.Ferry
	if e.ferry == "" && len(cfg.Modes) > 0 {
		e.ferry = filepath.Join(e.work, "ferry")
		fmt.Fprintln(log, "building ferry from", e.repo)
		if err := goBuild(ctx, e.repo, e.ferry, "./cmd/ferry"); err != nil {
			return nil, err
		}
	}
	e.hello = filepath.Join(e.work, "hello-bin", "hello")
	fmt.Fprintln(log, "building examples/hello")
	if err := goBuild(ctx, e.repo, e.hello, "./examples/hello/cmd/hello"); err != nil {
		return nil, err
	}
	return e, nil
}

// goBuild builds pkg of the repo as `ferry build` builds a Go app.
func goBuild(ctx context.Context, repo, out, pkg string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", out, pkg)
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return nil
}

// findRepo is dir, or the module root above the working directory.
func findRepo(dir string) (string, error) {
	if dir != "" {
		return filepath.Abs(dir)
	}
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && strings.Contains(string(b), "module github.com/ferrydeploy/ferry\n") {
			return d, nil
		}
		up := filepath.Dir(d)
		if up == d {
			return "", fmt.Errorf("run inside the ferry repository (no go.mod of github.com/ferrydeploy/ferry above the working directory)")
		}
		d = up
	}
}

func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	return fmt.Sprintf("%d CPUs (%s), %s/%s, %s", runtime.NumCPU(), model, runtime.GOOS, runtime.GOARCH, runtime.Version())
}

// finish stops the load and stores its tallies in r.
func finish(r *Run, l *load) {
	r.Clients, r.Backlog = l.stop()
	r.LoadSecs = time.Since(l.start).Round(10 * time.Millisecond).Seconds()
}

// sortedKeys is for stable reports.
func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
