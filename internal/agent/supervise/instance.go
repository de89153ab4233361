// Package supervise runs an app's process instances on a host: each in its
// own process group, restarted with backoff when it crashes, its output
// drained into rotated log files, its health checked, and adoptable by a
// restarted agent without being restarted.
package supervise

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/agent/health"
	"github.com/ferrydeploy/ferry/internal/agent/logfile"
)

// Spec is what to run for one instance of a process.
type Spec struct {
	Process     string // e.g. web
	N           int    // instance number, from 1
	Command     string // run with sh -c
	Dir         string
	Env         []string
	Port        int // the instance's $PORT, 0 for none; health checks use it
	StopTimeout time.Duration
	Health      *ferry.Health // nil: healthy once it has run MinUptime
	MinUptime   time.Duration // default 1s
	LogPath     string
	Log         logfile.Options
	RunDir      string // where the instance's output FIFOs live
	Backoff     Backoff
	OnChange    func() // called after every status change, not under a lock
	Logger      *slog.Logger
	Release     string // the release the instance runs, for status

	// WaitReady, when set, is run for each started process and returns nil
	// when the process says it is ready (sd_notify READY=1).
	WaitReady func(ctx context.Context, pid int) error
	// NotifyOnly makes READY=1 the only sign of readiness: with a socket
	// shared between old and new instances, a health check on the port may
	// be answered by the old one.
	NotifyOnly bool
	// Prefix goes before the command line (after Wrap's): the shim that
	// sets the process's limits and user (package runas). Credential is
	// that user, for exec health checks.
	Prefix     []string
	Credential *syscall.Credential
	// Wrap, when set, rewrites the command line before each start and adds
	// environment and files for fds 3, 4, …: how a listening socket is
	// handed to the process.
	Wrap func(argv []string) (wrapped []string, env []string, files []*os.File, err error)
}

// Name is how status and logs name the instance: "web.1".
func (s Spec) Name() string { return fmt.Sprintf("%s.%d", s.Process, s.N) }

// Instance states.
const (
	StateRunning  = "running"
	StateBackoff  = "backoff"  // crashed; waiting to restart
	StateStopped  = "stopped"  // stopped on request
	StateDetached = "detached" // left running for the next agent
)

// Status is what an instance reports, and what a restarted agent needs to
// adopt it.
type Status struct {
	Process    string        `json:"process"`
	Instance   int           `json:"instance"`
	State      string        `json:"state"`
	PID        int           `json:"pid,omitempty"`
	StartTicks uint64        `json:"start_ticks,omitempty"`
	Started    time.Time     `json:"started,omitzero"`
	Port       int           `json:"port,omitempty"`
	Restarts   int           `json:"restarts"`
	Health     health.Status `json:"health"`
	// Ready is set once the process passed its health check, or, for a
	// process without one (or a handed-off socket), said READY=1 (or ran
	// MinUptime); upgrades switch traffic to an instance only when it is.
	Ready   bool   `json:"ready"`
	Release string `json:"release,omitempty"`
	// Pipes names the run's output FIFOs in RunDir, which an adopting
	// agent reopens.
	Pipes     string    `json:"pipes,omitempty"`
	LastError string    `json:"last_error,omitempty"`
	CrashLoop bool      `json:"crash_loop,omitempty"`
	NextStart time.Time `json:"next_start,omitzero"`
}

// Instance supervises one process instance until Stop or Detach.
type Instance struct {
	spec     Spec
	log      *logfile.Writer
	closeLog func() error
	mu       sync.Mutex
	st       Status
	stopCh   chan struct{}
	detach   chan struct{}
	once     sync.Once
	done     chan struct{}
}

// Start begins supervising spec. With prev (the instance's last status, from
// an earlier agent's state file), it first tries to adopt the process prev
// names, and starts a new one only when that process is gone.
func Start(spec Spec, prev *Status) (*Instance, error) {
	if spec.StopTimeout <= 0 {
		spec.StopTimeout = 10 * time.Second
	}
	if spec.MinUptime <= 0 {
		spec.MinUptime = time.Second
	}
	if spec.Logger == nil {
		spec.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(spec.RunDir, 0o700); err != nil {
		return nil, fmt.Errorf("supervise %s: %w", spec.Name(), err)
	}
	w, closeLog, err := openLog(spec.LogPath, spec.Log)
	if err != nil {
		return nil, fmt.Errorf("supervise %s: %w", spec.Name(), err)
	}
	i := &Instance{
		spec:     spec,
		log:      w,
		closeLog: closeLog,
		st:       Status{Process: spec.Process, Instance: spec.N, Port: spec.Port, Health: health.Unknown, Release: spec.Release},
		stopCh:   make(chan struct{}),
		detach:   make(chan struct{}),
		done:     make(chan struct{}),
	}
	if prev != nil {
		i.st.Restarts = prev.Restarts
	}
	go i.run(prev)
	return i, nil
}

// Status is a snapshot of the instance's status.
func (i *Instance) Status() Status {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.st
}

// Spec is what the instance runs.
func (i *Instance) Spec() Spec { return i.spec }

// Stop stops the instance for good: SIGTERM to its process group, SIGKILL
// after StopTimeout, and waits until no process of the group is left (or
// ctx is done).
func (i *Instance) Stop(ctx context.Context) error {
	i.once.Do(func() { close(i.stopCh) })
	select {
	case <-i.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Detach stops supervising and leaves the process running, for the next
// agent to adopt.
func (i *Instance) Detach() {
	i.once.Do(func() { close(i.detach) })
	<-i.done
}

func (i *Instance) update(f func(st *Status)) {
	i.mu.Lock()
	f(&i.st)
	i.mu.Unlock()
	if i.spec.OnChange != nil {
		i.spec.OnChange()
	}
}

func (i *Instance) run(prev *Status) {
	defer close(i.done)
	defer i.closeLog()
	attempt := 0
	for {
		p, readers, started, pipes, err := i.launch(prev)
		prev = nil
		if err != nil {
			attempt++
			i.log.Note("start failed: %v", err)
			if !i.wait(attempt, err) {
				return
			}
			continue
		}
		ended := i.supervise(p, readers, started, pipes)
		if ended {
			return
		}
		if time.Since(started) >= i.spec.Backoff.withDefaults().Reset {
			attempt = 0
		}
		attempt++
		if !i.wait(attempt, p.err) {
			return
		}
	}
}

// launch adopts prev's process when it can, else starts a new one. pipes
// names the run's output FIFOs.
func (i *Instance) launch(prev *Status) (p *proc, rs [2]*os.File, started time.Time, pipes string, err error) {
	if prev != nil && prev.PID > 0 {
		p, err := adopt(prev.PID, prev.StartTicks)
		if err == nil {
			pipes = cmp.Or(prev.Pipes, i.spec.Name())
			outPath, errPath := fifos(i.spec.RunDir, pipes)
			for k, path := range []string{outPath, errPath} {
				if r, err := openReader(path); err == nil {
					rs[k] = r
				}
			}
			i.log.Note("adopted pid %d", p.pid)
			i.spec.Logger.Info("adopted", "instance", i.spec.Name(), "pid", p.pid)
			return p, rs, prev.Started, pipes, nil
		}
		i.log.Note("not adopting: %v", err)
		i.spec.Logger.Info("not adopting", "instance", i.spec.Name(), "err", err)
	}
	argv, env, files := shellCommand(i.spec.Command), i.spec.Env, []*os.File(nil)
	if i.spec.Wrap != nil {
		var extra []string
		argv, extra, files, err = i.spec.Wrap(argv)
		if err != nil {
			return nil, rs, time.Time{}, "", err
		}
		env = append(env[:len(env):len(env)], extra...)
		defer func() {
			for _, f := range files {
				f.Close()
			}
		}()
	}
	// Each run has FIFOs of its own: during an upgrade the old and the new
	// instance of web.1 run side by side, and a shared pipe would keep the
	// old run's reader from ever seeing EOF.
	pipes = fmt.Sprintf("%s-%d", i.spec.Name(), time.Now().UnixNano())
	outPath, errPath := fifos(i.spec.RunDir, pipes)
	// The mark by which a later agent finds this process if this one is
	// killed before it records the pid (Orphans).
	env = append(env[:len(env):len(env)], RunDirEnv+"="+i.spec.RunDir)
	if len(i.spec.Prefix) > 0 {
		argv = append(slices.Clone(i.spec.Prefix), argv...)
	}
	p, rs, err = startProc(argv, i.spec.Dir, env, files, outPath, errPath)
	if err != nil {
		os.Remove(outPath)
		os.Remove(errPath)
		return nil, rs, time.Time{}, "", err
	}
	i.log.Note("started pid %d", p.pid)
	return p, rs, time.Now(), pipes, nil
}

// supervise watches one run of the process until it exits (false) or the
// instance is stopped or detached (true).
func (i *Instance) supervise(p *proc, readers [2]*os.File, started time.Time, pipes string) bool {
	removePipes := func() {
		outPath, errPath := fifos(i.spec.RunDir, pipes)
		os.Remove(outPath)
		os.Remove(errPath)
	}
	var drains sync.WaitGroup
	for k, r := range readers {
		if r == nil {
			continue
		}
		drains.Add(1)
		go func(r io.ReadCloser, stream string) {
			defer drains.Done()
			i.log.Drain(r, stream)
			r.Close()
		}(r, []string{"out", "err"}[k])
	}
	hctx, stopHealth := context.WithCancel(context.Background())
	defer stopHealth()
	i.update(func(st *Status) {
		st.State, st.PID, st.StartTicks, st.Started, st.Pipes = StateRunning, p.pid, p.ticks, started, pipes
		st.Health, st.NextStart, st.Ready = health.Unknown, time.Time{}, false
	})
	// With a health check, the check decides when an instance is ready:
	// READY=1 alone gates only processes without one. (gunicorn, for one,
	// says READY=1 before its workers have loaded the app, and a release
	// that crashes at import would get traffic.) NotifyOnly is the
	// exception: there a check may be answered by the old instance.
	if i.spec.WaitReady != nil && (i.spec.Health == nil || i.spec.NotifyOnly) {
		go func() {
			if i.spec.WaitReady(hctx, p.pid) == nil {
				i.update(func(st *Status) {
					if st.PID == p.pid {
						st.Ready = true
					}
				})
			}
		}()
	}
	var uptime <-chan time.Time
	if h := i.spec.Health; h != nil {
		c, err := health.NewAs(*h, i.spec.Port, i.spec.Dir, i.spec.Env, i.spec.Credential)
		if err != nil {
			i.update(func(st *Status) { st.Health, st.LastError = health.Unhealthy, err.Error() })
		} else {
			c.OnChange = func(s health.Status, err error) {
				i.update(func(st *Status) {
					st.Health = s
					st.Ready = st.Ready || (s == health.Healthy && !i.spec.NotifyOnly)
					if err != nil {
						st.LastError = "health: " + err.Error()
					}
				})
			}
			go c.Run(hctx)
		}
	} else {
		t := time.NewTimer(max(0, i.spec.MinUptime-time.Since(started)))
		defer t.Stop()
		uptime = t.C
	}
	for {
		select {
		case <-uptime:
			i.update(func(st *Status) { st.Health, st.Ready = health.Healthy, st.Ready || !i.spec.NotifyOnly })
		case <-p.done:
			stopHealth()
			// What the main process left behind in its group would hold
			// its port or files against the next run.
			i.killGroup(p.pid)
			drainWait(&drains, time.Second)
			removePipes()
			i.log.Note("pid %d %v", p.pid, p.err)
			return false
		case <-i.stopCh:
			stopHealth()
			i.terminate(p)
			drainWait(&drains, time.Second)
			removePipes()
			i.update(func(st *Status) { st.State, st.PID, st.Health, st.Ready = StateStopped, 0, health.Unknown, false })
			return true
		case <-i.detach:
			stopHealth()
			for _, r := range readers {
				if r != nil {
					r.Close() // unblocks the drains; the pipe keeps what the app writes next
				}
			}
			drainWait(&drains, time.Second)
			i.update(func(st *Status) { st.State = StateDetached })
			return true
		}
	}
}

// wait sleeps out the backoff before restart number attempt; false means
// the instance was stopped or detached meanwhile.
func (i *Instance) wait(attempt int, cause error) bool {
	d := i.spec.Backoff.Delay(attempt)
	msg := ""
	if cause != nil {
		msg = cause.Error()
	}
	i.update(func(st *Status) {
		st.State, st.PID, st.Health, st.Ready = StateBackoff, 0, health.Unknown, false
		st.Restarts++
		st.LastError = msg
		st.CrashLoop = attempt >= 3
		st.NextStart = time.Now().Add(d)
	})
	i.log.Note("restarting in %v", d.Round(time.Millisecond))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-i.stopCh:
		i.update(func(st *Status) { st.State, st.NextStart = StateStopped, time.Time{} })
		return false
	case <-i.detach:
		i.update(func(st *Status) { st.State = StateDetached })
		return false
	}
}

// terminate sends SIGTERM to p's process group and SIGKILL to whatever is
// left of it after StopTimeout, and returns once the group is empty.
func (i *Instance) terminate(p *proc) {
	i.log.Note("stopping pid %d (SIGTERM to its group)", p.pid)
	signalGroup(p.pid, syscall.SIGTERM)
	deadline := time.NewTimer(i.spec.StopTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	exited := false
	for {
		if exited && len(GroupMembers(p.pid)) == 0 {
			return
		}
		select {
		case <-p.done:
			exited = true
		case <-tick.C:
		case <-deadline.C:
			i.log.Note("still running after %v: SIGKILL to the group", i.spec.StopTimeout)
			i.killGroup(p.pid)
			<-p.done
			waitGroupGone(p.pid, 5*time.Second)
			return
		}
	}
}

// waitGroupGone waits, within bound, until SIGKILLed members of group pgid
// have died: delivery is asynchronous.
func waitGroupGone(pgid int, bound time.Duration) {
	deadline := time.Now().Add(bound)
	for len(GroupMembers(pgid)) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
}

func (i *Instance) killGroup(pgid int) {
	if len(GroupMembers(pgid)) == 0 {
		return
	}
	if err := signalGroup(pgid, syscall.SIGKILL); err != nil {
		i.spec.Logger.Warn("kill process group", "pgid", pgid, "err", err)
	}
	waitGroupGone(pgid, 5*time.Second)
}

func drainWait(wg *sync.WaitGroup, bound time.Duration) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(bound):
	}
}
