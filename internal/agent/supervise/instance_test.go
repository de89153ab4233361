package supervise

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/agent/health"
)

// watcher records an instance's statuses as they change.
type watcher struct {
	mu   sync.Mutex
	inst *Instance
	seen []Status
	ch   chan struct{}
}

func startWatched(t *testing.T, s Spec, prev *Status) (*Instance, *watcher) {
	t.Helper()
	w := &watcher{ch: make(chan struct{}, 1)}
	var ready sync.WaitGroup
	ready.Add(1)
	s.OnChange = func() {
		ready.Wait()
		st := w.inst.Status()
		w.mu.Lock()
		w.seen = append(w.seen, st)
		w.mu.Unlock()
		select {
		case w.ch <- struct{}{}:
		default:
		}
	}
	inst, err := Start(s, prev)
	if err != nil {
		t.Fatal(err)
	}
	w.inst = inst
	ready.Done()
	t.Cleanup(func() { inst.Stop(context.Background()) })
	return inst, w
}

// until waits for cond on the instance's status, failing after d.
func (w *watcher) until(t *testing.T, d time.Duration, what string, cond func(Status) bool) Status {
	t.Helper()
	deadline := time.After(d)
	for {
		st := w.inst.Status()
		if cond(st) {
			return st
		}
		select {
		case <-w.ch:
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			t.Fatalf("%s: not within %v; status %+v", what, d, st)
		}
	}
}

func testSpec(t *testing.T, command string) Spec {
	dir := t.TempDir()
	return Spec{
		Process:     "web",
		N:           1,
		Command:     command,
		Dir:         dir,
		Env:         append(os.Environ(), "GREETING=hi there"),
		StopTimeout: 2 * time.Second,
		LogPath:     filepath.Join(dir, "logs", "web.1.log"),
		RunDir:      filepath.Join(dir, "run"),
		MinUptime:   50 * time.Millisecond,
	}
}

func TestBackoffSchedule(t *testing.T) {
	s := testSpec(t, "exit 3")
	s.Backoff = Backoff{Initial: 100 * time.Millisecond, Max: 400 * time.Millisecond, Jitter: 0.25, Reset: time.Minute}
	_, w := startWatched(t, s, nil)
	w.until(t, 10*time.Second, "5 restarts", func(st Status) bool { return st.Restarts >= 5 })
	w.mu.Lock()
	var starts []time.Time
	var last time.Time
	crash := false
	for _, st := range w.seen {
		if st.State == StateRunning && !st.Started.Equal(last) {
			starts = append(starts, st.Started)
			last = st.Started
		}
		if st.CrashLoop {
			crash = true
		}
		if st.State == StateBackoff && st.LastError != "exited with code 3" {
			t.Errorf("last error %q, want exited with code 3", st.LastError)
		}
	}
	w.mu.Unlock()
	if !crash {
		t.Error("status never said crash-looping")
	}
	want := []time.Duration{100, 200, 400, 400}
	if len(starts) < len(want)+1 {
		t.Fatalf("saw %d starts, want %d", len(starts), len(want)+1)
	}
	for k, base := range want {
		gap := starts[k+1].Sub(starts[k])
		lo := time.Duration(float64(base)*0.75) * time.Millisecond
		hi := time.Duration(float64(base)*1.25)*time.Millisecond + 150*time.Millisecond // plus the run and the fork
		if gap < lo || gap > hi {
			t.Errorf("restart %d came %v after the previous start, want %v±25%%", k+1, gap, base*time.Millisecond)
		}
	}
}

func TestBackoffDelays(t *testing.T) {
	b := Backoff{Initial: time.Second, Max: time.Minute}
	for attempt, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 7: time.Minute, 50: time.Minute} {
		if got := b.Delay(attempt); got != want {
			t.Errorf("Delay(%d) = %v, want %v", attempt, got, want)
		}
	}
	j := Backoff{Initial: time.Second, Max: time.Minute, Jitter: 0.25}
	for range 200 {
		if d := j.Delay(1); d < 750*time.Millisecond || d > 1250*time.Millisecond {
			t.Fatalf("jittered delay %v outside ±25%%", d)
		}
	}
}

func TestStopKillsTheWholeGroup(t *testing.T) {
	tests := []struct {
		name    string
		command string
		timeout time.Duration
		maxStop time.Duration
	}{
		{"polite", "sleep 100 & sleep 100 & wait", 5 * time.Second, 3 * time.Second},
		{"ignores SIGTERM", "trap '' TERM; sleep 100 & sleep 100", 300 * time.Millisecond, 3 * time.Second},
		{"grandchild ignores SIGTERM", "sh -c 'trap \"\" TERM; sleep 100; sleep 100' & exec sleep 100", 300 * time.Millisecond, 3 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := testSpec(t, tt.command)
			s.StopTimeout = tt.timeout
			inst, w := startWatched(t, s, nil)
			st := w.until(t, 5*time.Second, "running", func(st Status) bool { return st.PID > 0 })
			// Let the shell start its children.
			deadline := time.Now().Add(5 * time.Second)
			for len(GroupMembers(st.PID)) < 3 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if n := len(GroupMembers(st.PID)); n < 3 {
				t.Fatalf("group has %d processes, want at least 3", n)
			}
			begin := time.Now()
			if err := inst.Stop(context.Background()); err != nil {
				t.Fatal(err)
			}
			if took := time.Since(begin); took > tt.maxStop {
				t.Errorf("stop took %v", took)
			}
			if left := GroupMembers(st.PID); len(left) > 0 {
				t.Fatalf("processes left in group %d after stop: %v", st.PID, left)
			}
			if got := inst.Status().State; got != StateStopped {
				t.Errorf("state %s, want stopped", got)
			}
		})
	}
}

func TestCrashKillsLeftovers(t *testing.T) {
	// The main process exits and leaves a child behind in its group; the
	// next run must not find it still holding things.
	s := testSpec(t, "sleep 100 & sleep 0.2; exit 1")
	s.Backoff = Backoff{Initial: time.Hour}
	_, w := startWatched(t, s, nil)
	first := w.until(t, 5*time.Second, "running", func(st Status) bool { return st.PID > 0 })
	w.until(t, 5*time.Second, "crash", func(st Status) bool { return st.State == StateBackoff })
	if left := GroupMembers(first.PID); len(left) > 0 {
		t.Fatalf("leftovers of the crashed run: %v", left)
	}
}

func TestLogsAndEnvironment(t *testing.T) {
	s := testSpec(t, `echo "out $GREETING"; echo "err line" >&2; sleep 100`)
	inst, w := startWatched(t, s, nil)
	w.until(t, 5*time.Second, "running", func(st Status) bool { return st.PID > 0 })
	deadline := time.Now().Add(5 * time.Second)
	var b []byte
	for time.Now().Before(deadline) {
		b, _ = os.ReadFile(s.LogPath)
		if strings.Contains(string(b), "err line") && strings.Contains(string(b), "out hi there") {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(string(b), " out out hi there\n") || !strings.Contains(string(b), " err err line\n") {
		t.Fatalf("log does not have both streams:\n%s", b)
	}
	if !strings.Contains(string(b), "started pid") {
		t.Errorf("log lacks the agent's note of the start:\n%s", b)
	}
	inst.Stop(context.Background())
}

func TestAdoptAfterDetach(t *testing.T) {
	s := testSpec(t, `i=0; while :; do i=$((i+1)); echo "tick $i"; sleep 0.05; done`)
	inst, w := startWatched(t, s, nil)
	st := w.until(t, 5*time.Second, "running", func(st Status) bool { return st.PID > 0 })
	inst.Detach()
	if inst.Status().State != StateDetached {
		t.Fatalf("state %s after detach", inst.Status().State)
	}
	if len(GroupMembers(st.PID)) == 0 {
		t.Fatal("detach stopped the process")
	}
	before, _ := os.ReadFile(s.LogPath)

	inst2, w2 := startWatched(t, s, &st)
	st2 := w2.until(t, 5*time.Second, "adopted", func(st Status) bool { return st.PID > 0 })
	if st2.PID != st.PID || !st2.Started.Equal(st.Started) {
		t.Fatalf("adopted pid %d started %v, want pid %d started %v", st2.PID, st2.Started, st.PID, st.Started)
	}
	// Output written while nobody read it, and after, reaches the log.
	deadline := time.Now().Add(5 * time.Second)
	for {
		after, _ := os.ReadFile(s.LogPath)
		if len(after) > len(before)+200 && strings.Contains(string(after), "adopted pid") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("log did not grow after adoption:\n%s", after)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := inst2.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if left := GroupMembers(st.PID); len(left) > 0 {
		t.Fatalf("adopted process survived stop: %v", left)
	}
}

func TestNeverAdoptAReusedPid(t *testing.T) {
	s := testSpec(t, "sleep 100")
	// Our own pid is alive but is not the process the record names.
	stale := Status{Process: "web", Instance: 1, PID: os.Getpid(), StartTicks: 1}
	_, w := startWatched(t, s, &stale)
	st := w.until(t, 5*time.Second, "running", func(st Status) bool { return st.PID > 0 })
	if st.PID == os.Getpid() {
		t.Fatal("adopted a pid whose start time differs")
	}
	// The log is written asynchronously: wait for the line.
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(s.LogPath)
		if strings.Contains(string(b), "not adopting") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("log does not say why it did not adopt:\n%s", b)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestHealthFlips(t *testing.T) {
	s := testSpec(t, "sleep 100")
	marker := filepath.Join(s.Dir, "healthy")
	s.Health = &ferry.Health{Exec: "test -f " + marker, Interval: 20 * time.Millisecond, Timeout: time.Second, Healthy: 1, Unhealthy: 2}
	_, w := startWatched(t, s, nil)
	w.until(t, 5*time.Second, "unhealthy", func(st Status) bool { return st.Health == health.Unhealthy })
	os.WriteFile(marker, nil, 0o644)
	w.until(t, 5*time.Second, "healthy", func(st Status) bool { return st.Health == health.Healthy })
	os.Remove(marker)
	st := w.until(t, 5*time.Second, "unhealthy again", func(st Status) bool { return st.Health == health.Unhealthy })
	if !strings.HasPrefix(st.LastError, "health: ") {
		t.Errorf("last error %q does not say it is the health check", st.LastError)
	}
}

func TestNoHealthCheckIsHealthyAfterMinUptime(t *testing.T) {
	s := testSpec(t, "sleep 100")
	_, w := startWatched(t, s, nil)
	w.until(t, 5*time.Second, "healthy", func(st Status) bool { return st.Health == health.Healthy })
}

func TestStartFailureBacksOff(t *testing.T) {
	s := testSpec(t, "sleep 100")
	s.Dir = filepath.Join(s.Dir, "missing")
	s.Backoff = Backoff{Initial: 20 * time.Millisecond, Max: 20 * time.Millisecond}
	_, w := startWatched(t, s, nil)
	st := w.until(t, 5*time.Second, "restarts", func(st Status) bool { return st.Restarts >= 2 })
	if !strings.Contains(st.LastError, "missing") {
		t.Errorf("last error %q does not name the missing directory", st.LastError)
	}
}

func TestShellCommand(t *testing.T) {
	for cmd, want := range map[string]string{
		"bin/hello -port 1":      "exec bin/hello -port 1",
		"exit 3":                 "exit 3",
		"FOO=1 bin/hello":        "FOO=1 bin/hello",
		"bin/a && bin/b":         "bin/a && bin/b",
		"trap '' TERM; sleep 1":  "trap '' TERM; sleep 1",
		"bundle exec puma $PORT": "exec bundle exec puma $PORT",
	} {
		if got := shellCommand(cmd)[2]; got != want {
			t.Errorf("shellCommand(%q) runs %q, want %q", cmd, got, want)
		}
	}
}

func TestWrapHandsFilesAndReadiness(t *testing.T) {
	s := testSpec(t, `if [ -e /proc/$$/fd/3 ]; then echo "fd3 $HANDED"; fi; sleep 100`)
	s.MinUptime = time.Hour // only WaitReady can make it ready
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	s.Wrap = func(argv []string) ([]string, []string, []*os.File, error) {
		dup, err := os.Open(os.DevNull)
		return argv, []string{"HANDED=yes"}, []*os.File{dup}, err
	}
	readyFor := make(chan int, 1)
	s.WaitReady = func(ctx context.Context, pid int) error {
		readyFor <- pid
		return nil
	}
	_, wt := startWatched(t, s, nil)
	st := wt.until(t, 5*time.Second, "ready", func(st Status) bool { return st.Ready })
	if pid := <-readyFor; pid != st.PID {
		t.Errorf("WaitReady asked about pid %d, instance is %d", pid, st.PID)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(s.LogPath)
		if strings.Contains(string(b), "fd3 yes") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("process did not get fd 3 and the wrapped environment:\n%s", b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPipeBuffer: an app may write 1 MiB while no agent reads its output
// before it blocks, not the kernel's default 64 KiB.
func TestPipeBuffer(t *testing.T) {
	s := testSpec(t, "sleep 100")
	_, w := startWatched(t, s, nil)
	st := w.until(t, 5*time.Second, "running", func(st Status) bool { return st.PID > 0 && st.Pipes != "" })
	out, _ := fifos(s.RunDir, st.Pipes)
	f, err := os.OpenFile(out, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n, err := unix.FcntlInt(f.Fd(), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		t.Fatal(err)
	}
	if n < pipeSize {
		t.Fatalf("pipe buffer %d bytes, want %d", n, pipeSize)
	}
}

// TestReadyWaitsForTheCheck: with a health check, READY=1 does not make an
// instance ready; only a passing check does (gunicorn says READY=1 before
// its workers have loaded the app). Without a check READY=1 does.
func TestReadyWaitsForTheCheck(t *testing.T) {
	for _, tc := range []struct {
		name      string
		check     string // exec health check; "" for none
		wantReady bool
	}{
		{"failing check", "false", false},
		{"passing check", "true", true},
		{"no check", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := testSpec(t, "sleep 100")
			s.MinUptime = time.Hour // only READY=1 or the check can make it ready
			if tc.check != "" {
				s.Health = &ferry.Health{Exec: tc.check, Interval: 20 * time.Millisecond, Healthy: 1, Unhealthy: 1}
			}
			s.WaitReady = func(ctx context.Context, pid int) error {
				return nil // the process says READY=1 at once
			}
			_, w := startWatched(t, s, nil)
			if tc.wantReady {
				w.until(t, 5*time.Second, "ready", func(st Status) bool { return st.Ready })
				return
			}
			st := w.until(t, 5*time.Second, "check failed", func(st Status) bool { return st.Health == health.Unhealthy })
			if st.Ready {
				t.Errorf("ready after READY=1 though its check fails: %+v", st)
			}
		})
	}
}
