package devrun

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry/internal/spec"
)

// lockedBuffer is the runner's Out, read by the test while processes write.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// run is a Runner running in the background on a Procfile in a temp dir.
type run struct {
	t      *testing.T
	r      *Runner
	out    *lockedBuffer
	cancel context.CancelFunc
	done   chan error
}

var clock = time.Date(2024, 1, 2, 12, 34, 56, 0, time.UTC)

func startRun(t *testing.T, procfile string, setup func(*Runner)) *run {
	t.Helper()
	dir := t.TempDir()
	procs, err := spec.ParseProcfile([]byte(procfile))
	if err != nil {
		t.Fatal(err)
	}
	for i := range procs {
		procs[i].Scale = 1
	}
	out := &lockedBuffer{}
	r := &Runner{App: "demo", Dir: dir, Processes: procs, Out: out, Now: func() time.Time { return clock }}
	if setup != nil {
		setup(r)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &run{t: t, r: r, out: out, cancel: cancel, done: make(chan error, 1)}
	go func() { h.done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-h.done:
		case <-time.After(20 * time.Second):
			t.Error("runner did not return after cancel")
		}
	})
	return h
}

// waitFor polls the output until it contains s.
func (h *run) waitFor(s string) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(h.out.String(), s) {
		if time.Now().After(deadline) {
			h.t.Fatalf("no %q in output:\n%s", s, h.out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// wait waits for Run to return, cancelling first when stop is set.
func (h *run) wait(stop bool) error {
	h.t.Helper()
	if stop {
		h.cancel()
	}
	select {
	case err := <-h.done:
		h.done <- err // for Cleanup
		return err
	case <-time.After(15 * time.Second):
		h.t.Fatalf("runner did not return; output:\n%s", h.out.String())
		return nil
	}
}

func TestOutputIsPrefixedWholeLines(t *testing.T) {
	const n = 300
	var procfile strings.Builder
	for _, name := range []string{"web", "worker", "clock"} {
		// Long lines written concurrently by three processes would tear
		// if the runner did not write each line in one piece.
		fmt.Fprintf(&procfile, "%s: i=0; while [ $i -lt %d ]; do echo \"%s-$i-%s\"; i=$((i+1)); done; echo %s >&2; sleep 100\n",
			name, n, name, strings.Repeat("x", 500), name+"-stderr")
	}
	h := startRun(t, procfile.String(), nil)
	for _, name := range []string{"web", "worker", "clock"} {
		h.waitFor(name + "-stderr")
	}
	if err := h.wait(true); err != nil {
		t.Fatalf("Run = %v, want nil after cancel", err)
	}
	line := regexp.MustCompile(`^12:34:56 (web|worker|clock)\.1 *\| (web|worker|clock)-(\d+)-x{500}$|^12:34:56 (web|worker|clock)\.1 *\| (web|worker|clock)-stderr$|^12:34:56 system +\| `)
	counts := map[string]int{}
	for _, l := range strings.Split(strings.TrimSuffix(h.out.String(), "\n"), "\n") {
		m := line.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("torn or unprefixed line: %.120q", l)
		}
		if m[1] != m[2] || m[4] != m[5] {
			t.Fatalf("line under the wrong prefix: %.120q", l)
		}
		if m[1] != "" {
			counts[m[1]]++
		}
		if strings.HasPrefix(l, "12:34:56 ") && !strings.Contains(l, " system ") && l[len("12:34:56 ")+len("worker.1")+1] != '|' {
			t.Fatalf("name not padded to the widest (worker.1): %q", l[:30])
		}
	}
	for _, name := range []string{"web", "worker", "clock"} {
		if counts[name] != n {
			t.Errorf("%s: %d lines, want %d", name, counts[name], n)
		}
	}
}

func TestPortsFollowForeman(t *testing.T) {
	procfile := "web: echo \"$FERRY_APP $PS PORT=$PORT $FERRY_PROCESS $FERRY_INSTANCE\"; sleep 100\n" +
		"other: echo never; sleep 100\n" +
		"worker: echo \"$FERRY_APP $PS PORT=$PORT $FERRY_PROCESS $FERRY_INSTANCE\"; sleep 100\n"
	h := startRun(t, procfile, func(r *Runner) {
		f, err := ParseFormation("web=2,worker=1")
		if err != nil {
			t.Fatal(err)
		}
		if r.Processes, err = f.Apply(r.Processes); err != nil {
			t.Fatal(err)
		}
		r.Env = append(os.Environ(), "PORT=1") // the runner's PORT wins
	})
	want := []string{
		"web.1    | demo web.1 PORT=5000 web 1",
		"web.2    | demo web.2 PORT=5001 web 2",
		"worker.1 | demo worker.1 PORT=5200 worker 1",
	}
	for _, w := range want {
		h.waitFor(w)
	}
	if err := h.wait(true); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(h.out.String(), "never") {
		t.Errorf("a process scaled to 0 ran:\n%s", h.out.String())
	}
}

func TestBasePortAndEnvFile(t *testing.T) {
	dir := t.TempDir()
	envFile := filepath.Join(dir, ".env")
	if err := os.WriteFile(envFile, []byte("GREETING=hello from .env\nexport QUOTED=\"a b\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env, err := Environ([]string{"PATH=" + os.Getenv("PATH"), "GREETING=overridden"}, envFile)
	if err != nil {
		t.Fatal(err)
	}
	h := startRun(t, "web: echo \"$GREETING|$QUOTED|$PORT\"; sleep 100\n", func(r *Runner) {
		r.Env, r.BasePort = env, 7000
	})
	h.waitFor("| hello from .env|a b|7000")
	if err := h.wait(true); err != nil {
		t.Fatal(err)
	}
	if _, err := Environ(nil, filepath.Join(dir, "missing.env")); err == nil {
		t.Error("Environ of a missing file: no error")
	}
}

func TestExitStopsAll(t *testing.T) {
	h := startRun(t, "good: echo up; sleep 100\nbad: echo going down; exit 3\n", nil)
	err := h.wait(false)
	if err == nil || !strings.Contains(err.Error(), "bad.1 exited with code 3") || strings.Contains(err.Error(), "good") {
		t.Fatalf("Run = %v, want an error naming bad.1 only", err)
	}
	out := h.out.String()
	for _, want := range []string{"system | bad.1 exited with code 3", "system | sending SIGTERM to all processes", "system | good.1 terminated by SIGTERM"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in output:\n%s", want, out)
		}
	}
	if i, j := strings.Index(out, "going down"), strings.Index(out, "bad.1 exited"); i < 0 || i > j {
		t.Errorf("bad.1's last line is not printed before its exit:\n%s", out)
	}
}

func TestCleanExitByItselfStopsAllWithoutError(t *testing.T) {
	h := startRun(t, "done: true\nweb: sleep 100\n", nil)
	if err := h.wait(false); err != nil {
		t.Fatalf("Run = %v, want nil: done.1 exited 0 and web.1 stopped on SIGTERM", err)
	}
}

func TestCancelSendsSIGTERM(t *testing.T) {
	h := startRun(t, "web: trap 'echo term > marker; exit 0' TERM; echo ready; sleep 100 & wait\n", nil)
	h.waitFor("ready")
	if err := h.wait(true); err != nil {
		t.Fatalf("Run = %v, want nil after a clean stop", err)
	}
	b, err := os.ReadFile(filepath.Join(h.r.Dir, "marker"))
	if err != nil || string(b) != "term\n" {
		t.Fatalf("marker = %q, %v: the trap did not run", b, err)
	}
	if !strings.Contains(h.out.String(), "web.1 exited with code 0") {
		t.Errorf("output:\n%s", h.out.String())
	}
}

func TestIgnoringSIGTERMIsKilled(t *testing.T) {
	h := startRun(t, "stubborn: trap '' TERM; echo ready; sleep 100\n", func(r *Runner) { r.Timeout = 300 * time.Millisecond })
	h.waitFor("ready")
	start := time.Now()
	err := h.wait(true)
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Errorf("killed after %v, before the 300ms timeout", took)
	}
	if err == nil || !strings.Contains(err.Error(), "stubborn.1 did not stop within 300ms of SIGTERM and was killed") {
		t.Fatalf("Run = %v", err)
	}
	if !strings.Contains(h.out.String(), "system     | sending SIGKILL to all processes") {
		t.Errorf("output:\n%s", h.out.String())
	}
	noProcessesInGroup(t, leaderPid(t, h.out.String(), "stubborn.1"))
}

func TestNoOrphans(t *testing.T) {
	tests := []struct {
		name, command, wantErr string
	}{
		{"grandchild", "echo ready; sleep 100 & wait", ""},
		{"grandchild ignoring SIGTERM without our output",
			`sh -c "trap '' TERM; exec sleep 100" >/dev/null 2>&1 & echo ready; wait`, ""},
		{"grandchild ignoring SIGTERM holding our output",
			`sh -c "trap '' TERM; echo child; exec sleep 100" & echo ready; wait`, "web.1 left processes that did not stop within 300ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := startRun(t, "web: "+tt.command+"\n", func(r *Runner) { r.Timeout = 300 * time.Millisecond })
			h.waitFor("ready")
			err := h.wait(true)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("Run = %v, want %q", err, tt.wantErr)
			}
			noProcessesInGroup(t, leaderPid(t, h.out.String(), "web.1"))
		})
	}
}

func TestStartFailureStopsStarted(t *testing.T) {
	h := startRun(t, "web: sleep 100\n", func(r *Runner) { r.Dir = filepath.Join(r.Dir, "missing") })
	err := h.wait(false)
	if err == nil || !strings.Contains(err.Error(), "web.1 failed to start") {
		t.Fatalf("Run = %v", err)
	}
}

func TestNothingToRun(t *testing.T) {
	r := &Runner{Processes: nil}
	if err := r.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "no processes") {
		t.Fatalf("Run = %v", err)
	}
}

func leaderPid(t *testing.T, out, name string) int {
	t.Helper()
	m := regexp.MustCompile(regexp.QuoteMeta(name) + ` started with pid (\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no pid of %s in output:\n%s", name, out)
	}
	pid, _ := strconv.Atoi(m[1])
	return pid
}

// noProcessesInGroup fails unless, within a deadline, no live process is in
// process group pgid. SIGKILL is delivered asynchronously, hence the poll;
// zombies waiting for init to reap them are dead already.
func noProcessesInGroup(t *testing.T, pgid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		live := groupMembers(pgid)
		if len(live) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes left in group %d: %v", pgid, live)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func groupMembers(pgid int) []string {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var live []string
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // exited while we looked
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		f := strings.Fields(s[i+1:])
		if len(f) > 2 && f[0] != "Z" && f[2] == strconv.Itoa(pgid) {
			live = append(live, s[:i+1])
		}
	}
	return live
}
