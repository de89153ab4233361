package agent

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry/internal/agent/supervise"
	"github.com/ferrydeploy/ferry/internal/artifact"
	"github.com/ferrydeploy/ferry/internal/desired"
	"github.com/ferrydeploy/ferry/internal/fetch"
	"github.com/ferrydeploy/ferry/internal/fsutil"
	"github.com/ferrydeploy/ferry/internal/testenv"
)

// buildApp packs a small shell app whose processes are given as ferry.yaml
// text, and returns the artifact's path and sha256.
func buildApp(t *testing.T, name, version, processes string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	yaml := fmt.Sprintf("app: %s\nbuild:\n  command: \"true\"\ninclude: [bin/]\n%s", name, processes)
	os.WriteFile(filepath.Join(dir, "ferry.yaml"), []byte(yaml), 0o644)
	os.MkdirAll(filepath.Join(dir, "bin"), 0o755)
	os.WriteFile(filepath.Join(dir, "bin", "serve"), []byte("#!/bin/sh\necho \"serving $FERRY_APP $FERRY_RELEASE on $PORT greeting=$GREETING\"\nexec sleep 1000\n"), 0o755)
	res, err := artifact.Build(context.Background(), dir, artifact.BuildOptions{Version: version, OutDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return res.Path, res.SHA256
}

const healthyWeb = `processes:
  web:
    command: bin/serve
    scale: 2
    stop_timeout: 2s
`

const failingWeb = `processes:
  web:
    command: bin/serve
    health: {exec: "false", interval: 20ms, unhealthy: 2}
deploy: {health_timeout: 2s}
`

type testAgent struct {
	t       *testing.T
	root    string
	desired string
	a       *Agent
	cancel  context.CancelFunc
	done    chan error
}

func startAgent(t *testing.T, root, desiredPath string, mod ...func(*Config)) *testAgent {
	t.Helper()
	cfg := Config{Root: root, Desired: desiredPath, MinUptime: 50 * time.Millisecond, Backoff: supervise.Backoff{Initial: 50 * time.Millisecond, Max: 200 * time.Millisecond}}
	for _, m := range mod {
		m(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ta := &testAgent{t: t, root: root, desired: desiredPath, a: a, done: make(chan error, 1)}
	a.Applied() // make the channel before Run
	ctx, cancel := context.WithCancel(context.Background())
	ta.cancel = cancel
	go func() { ta.done <- a.Run(ctx) }()
	t.Cleanup(ta.finish)
	return ta
}

// finish stops the apps, then the agent, unless the test stopped it.
func (ta *testAgent) finish() {
	select {
	case <-ta.done:
		return
	default:
	}
	writeDesired(ta.t, ta.desired, "apps: {}\n")
	ta.until("apps stopped", 30*time.Second, func(st *State) bool {
		for _, as := range st.Apps {
			if len(as.Processes) > 0 {
				return false
			}
		}
		return true
	})
	ta.stop()
}

// stop stops the agent the way SIGTERM does: the apps keep running.
func (ta *testAgent) stop() {
	ta.cancel()
	select {
	case err := <-ta.done:
		ta.done <- err
		if err != nil {
			ta.t.Fatalf("agent: %v", err)
		}
	case <-time.After(20 * time.Second):
		ta.t.Fatal("agent did not stop within 20s")
	}
}

func writeDesired(t *testing.T, path, doc string) {
	t.Helper()
	if err := fsutil.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
}

// until polls the agent's live state until cond holds.
func (ta *testAgent) until(what string, d time.Duration, cond func(*State) bool) *State {
	ta.t.Helper()
	deadline := time.Now().Add(d)
	for {
		st, live, err := Status(context.Background(), ta.root)
		if err == nil && live && cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			ta.t.Fatalf("%s: not within %v; state %+v (live %v, err %v)", what, d, describe(st), live, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func describe(st *State) string {
	if st == nil {
		return "<nil>"
	}
	var b strings.Builder
	for name, as := range st.Apps {
		fmt.Fprintf(&b, "[%s %s %s err=%q", name, as.Release, as.State, as.Error)
		for _, p := range as.Processes {
			fmt.Fprintf(&b, " %s.%d:%s/%d/%s/%q", p.Process, p.Instance, p.State, p.PID, p.Health, p.LastError)
		}
		b.WriteString("] ")
	}
	return b.String()
}

func running(name, sha string, procs int) func(*State) bool {
	return func(st *State) bool {
		as := st.Apps[name]
		if as == nil || as.State != AppRunning || as.SHA256 != sha || len(as.Processes) != procs {
			return false
		}
		for _, p := range as.Processes {
			if p.PID == 0 || p.Health != "healthy" {
				return false
			}
		}
		return true
	}
}

func pids(as *AppState) []int {
	var out []int
	for _, p := range as.Processes {
		out = append(out, p.PID)
	}
	return out
}

func entry(name, path, sha, extra string) string {
	return fmt.Sprintf("  %s:\n    artifact: file://%s\n    sha256: %s\n%s", name, path, sha, extra)
}

func TestConvergeOnlyChangedApps(t *testing.T) {
	root := t.TempDir()
	desiredPath := filepath.Join(t.TempDir(), "desired.yaml")
	a1, s1 := buildApp(t, "alpha", "v1", healthyWeb)
	b1, sb1 := buildApp(t, "beta", "v1", healthyWeb)
	b2, sb2 := buildApp(t, "beta", "v2", healthyWeb)
	writeDesired(t, desiredPath, "apps:\n"+entry("alpha", a1, s1, "    env: {GREETING: hello}\n")+entry("beta", b1, sb1, ""))
	ta := startAgent(t, root, desiredPath)
	st := ta.until("both running", 20*time.Second, func(st *State) bool {
		return running("alpha", s1, 2)(st) && running("beta", sb1, 2)(st)
	})
	alphaPids := pids(st.Apps["alpha"])

	// The app's config and ferry's variables reach the process.
	log, _ := os.ReadFile(filepath.Join(root, AppsDir, "alpha", "logs", "web.1.log"))
	if !strings.Contains(string(log), "serving alpha "+st.Apps["alpha"].Release+" on ") || !strings.Contains(string(log), "greeting=hello") {
		t.Errorf("alpha's log does not show its environment:\n%s", log)
	}
	if fi, err := os.Stat(filepath.Join(root, AppsDir, "alpha", "env", st.Apps["alpha"].Release)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("rendered env file: %v %v", fi, err)
	}
	// Config values (secrets among them) stay on the host: masked in what
	// the agent shows and reports, and state.json is 0600 like env files.
	if spec := st.Apps["alpha"].Spec; spec == nil || spec.Env["GREETING"] != desired.Masked {
		t.Errorf("agent status shows the app's config: %+v", spec)
	}
	if fi, err := os.Stat(filepath.Join(root, StateFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("state.json: %v %v; want mode 0600", fi, err)
	}

	writeDesired(t, desiredPath, "apps:\n"+entry("alpha", a1, s1, "    env: {GREETING: hello}\n")+entry("beta", b2, sb2, ""))
	st = ta.until("beta upgraded", 20*time.Second, running("beta", sb2, 2))
	if got := pids(st.Apps["alpha"]); fmt.Sprint(got) != fmt.Sprint(alphaPids) {
		t.Errorf("alpha's processes changed from %v to %v though only beta changed", alphaPids, got)
	}
	cur, _ := os.Readlink(filepath.Join(root, AppsDir, "beta", "current"))
	if !strings.HasPrefix(filepath.Base(cur), "v2-") {
		t.Errorf("beta's current is %s, want its second release", cur)
	}

	// A config change alone (same artifact, new env) restarts the app's
	// processes with the new environment.
	writeDesired(t, desiredPath, "apps:\n"+entry("alpha", a1, s1, "    env: {GREETING: bonjour}\n")+entry("beta", b2, sb2, ""))
	ta.until("alpha restarted with its new config", 20*time.Second, func(st *State) bool {
		if !running("alpha", s1, 2)(st) || fmt.Sprint(pids(st.Apps["alpha"])) == fmt.Sprint(alphaPids) {
			return false
		}
		log, _ := os.ReadFile(filepath.Join(root, AppsDir, "alpha", "logs", "web.1.log"))
		return strings.Contains(string(log), "greeting=bonjour")
	})

	// Dropping an app from the document stops it and keeps its releases.
	writeDesired(t, desiredPath, "apps:\n"+entry("alpha", a1, s1, "    env: {GREETING: hello}\n"))
	ta.until("beta stopped", 20*time.Second, func(st *State) bool {
		return st.Apps["beta"] != nil && st.Apps["beta"].State == AppStopped && len(st.Apps["beta"].Processes) == 0
	})
	if _, err := os.Stat(filepath.Join(root, AppsDir, "beta", "current")); err != nil {
		t.Errorf("stopping beta removed its release: %v", err)
	}
}

func TestFailedReleaseGoesBack(t *testing.T) {
	root := t.TempDir()
	desiredPath := filepath.Join(t.TempDir(), "desired.yaml")
	good, sg := buildApp(t, "app", "v1", healthyWeb)
	bad, sbad := buildApp(t, "app", "v2", failingWeb)
	writeDesired(t, desiredPath, "apps:\n"+entry("app", good, sg, ""))
	ta := startAgent(t, root, desiredPath)
	st := ta.until("v1 running", 20*time.Second, running("app", sg, 2))
	v1 := st.Apps["app"].Release

	writeDesired(t, desiredPath, "apps:\n"+entry("app", bad, sbad, ""))
	st = ta.until("v2 rejected, v1 back", 30*time.Second, func(st *State) bool {
		as := st.Apps["app"]
		return as.State == AppFailed && as.Release == v1 && len(as.Processes) == 2 && as.Processes[0].Health == "healthy"
	})
	if e := st.Apps["app"].Error; !strings.Contains(e, "rolled back to "+v1) || !strings.Contains(e, "not healthy") {
		t.Errorf("error %q does not say what failed and where it went back to", e)
	}
	cur, _ := os.Readlink(filepath.Join(root, AppsDir, "app", "current"))
	if filepath.Base(cur) != v1 {
		t.Errorf("current is %s, want %s", cur, v1)
	}
	// The rejected release is not retried while the document is unchanged:
	// there is no state to wait for, only a time to watch.
	testenv.Always(t, "the agent does not retry the rejected release", 300*time.Millisecond, func() bool {
		st2, _, err := Status(context.Background(), root)
		if err != nil || st2.Apps["app"].Release != v1 {
			t.Errorf("agent retried the rejected release: %s (err %v)", describe(st2), err)
			return false
		}
		return true
	})
}

func TestRestartAdoptsProcesses(t *testing.T) {
	root := t.TempDir()
	desiredPath := filepath.Join(t.TempDir(), "desired.yaml")
	art, sum := buildApp(t, "app", "v1", healthyWeb)
	writeDesired(t, desiredPath, "apps:\n"+entry("app", art, sum, ""))
	ta := startAgent(t, root, desiredPath)
	st := ta.until("running", 20*time.Second, running("app", sum, 2))
	before := pids(st.Apps["app"])
	ta.stop()
	for _, pid := range before {
		if len(supervise.GroupMembers(pid)) == 0 {
			t.Fatalf("stopping the agent stopped pid %d", pid)
		}
	}
	ta2 := startAgent(t, root, desiredPath)
	st = ta2.until("adopted", 20*time.Second, running("app", sum, 2))
	if got := pids(st.Apps["app"]); fmt.Sprint(got) != fmt.Sprint(before) {
		t.Fatalf("after restart pids are %v, want the adopted %v", got, before)
	}
	for _, p := range st.Apps["app"].Processes {
		if p.Restarts != 0 {
			t.Errorf("%s.%d restarted %d times", p.Process, p.Instance, p.Restarts)
		}
	}
}

// TestSupersededDownload: a release whose artifact crawls in (a link that
// slowed to nothing) is given up the moment the desired state moves on —
// here back to the release that runs, as after a rollback — instead of
// being downloaded, installed and started first.
func TestSupersededDownload(t *testing.T) {
	root := t.TempDir()
	desiredPath := filepath.Join(t.TempDir(), "desired.yaml")
	good, sg := buildApp(t, "app", "v1", healthyWeb)
	next, snext := buildApp(t, "app", "v2", healthyWeb)
	body, err := os.ReadFile(next)
	if err != nil {
		t.Fatal(err)
	}
	started, gone, quit := make(chan struct{}, 10), make(chan struct{}, 10), make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body[:len(body)/4])
		w.(http.Flusher).Flush()
		started <- struct{}{}
		select { // the rest never comes
		case <-r.Context().Done():
			gone <- struct{}{}
		case <-quit:
		}
	}))
	// Cleanups run last first: the agent stops, then the stalled handler
	// is let go (Close waits for it).
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(quit) })

	writeDesired(t, desiredPath, "apps:\n"+entry("app", good, sg, ""))
	ta := startAgent(t, root, desiredPath, func(c *Config) { c.Registry = fetch.NewRegistry() })
	st := ta.until("v1 running", 20*time.Second, running("app", sg, 2))
	v1, before := st.Apps["app"].Release, pids(st.Apps["app"])

	slow := fmt.Sprintf("  app:\n    artifact: %s/app-v2.tar.zst\n    sha256: %s\n", srv.URL, snext)
	writeDesired(t, desiredPath, "apps:\n"+slow)
	select {
	case <-started:
	case <-time.After(20 * time.Second):
		t.Fatal("the agent did not start downloading v2")
	}
	ta.until("v2 installing", 5*time.Second, func(st *State) bool { return st.Apps["app"].State == AppInstalling })

	writeDesired(t, desiredPath, "apps:\n"+entry("app", good, sg, ""))
	select {
	case <-gone:
	case <-time.After(10 * time.Second):
		t.Fatal("the agent kept downloading a release no longer desired")
	}
	st = ta.until("v1 running again", 10*time.Second, running("app", sg, 2))
	if as := st.Apps["app"]; as.Release != v1 || fmt.Sprint(pids(as)) != fmt.Sprint(before) || as.Error != "" {
		t.Errorf("after v2 was superseded: %s; want %s with pids %v untouched and no error", describe(st), v1, before)
	}
	rels, _ := os.ReadDir(filepath.Join(root, AppsDir, "app", "releases"))
	for _, e := range rels {
		if e.Name() != v1 {
			t.Errorf("releases holds %s beside %s", e.Name(), v1)
		}
	}
}
