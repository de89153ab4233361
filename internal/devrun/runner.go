// Package devrun runs an app's processes on a developer's machine the way
// foreman and goreman do: every process of a Procfile (or ferry.yaml) at
// once, with a .env, foreman's PORT numbering and one stream of prefixed,
// coloured lines; when any process exits, or on Ctrl-C, all of them stop.
//
// It is deliberately not supervise/: nothing restarts, nothing is health
// checked, and the first exit ends the run, because on a laptop a crash
// should be seen, not papered over.
package devrun

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ferrydeploy/ferry"
	"golang.org/x/sys/unix"
)

// Defaults, as foreman's.
const (
	DefaultBasePort = 5000
	DefaultTimeout  = 5 * time.Second
)

// drainGrace bounds how long the runner waits for output still held open
// by something an exited process left behind, so that an escaped daemon
// cannot hang the runner.
const drainGrace = 250 * time.Millisecond

// Runner runs processes until one exits or ctx is cancelled, then stops
// them all.
type Runner struct {
	App string // FERRY_APP
	Dir string // working directory of every process
	// Processes in the file's order; each runs Scale instances. A process
	// with Scale 0 still takes its place in the PORT numbering.
	Processes []ferry.Process
	// Env is the whole environment of each process (nil: os.Environ());
	// PORT, PS and FERRY_* are set over it.
	Env []string
	// BasePort numbers ports as foreman does: instance n (from 0) of the
	// i-th process gets BasePort + 100*i + n. A ferry.yaml `port:` is the
	// public port on hosts and is not used here. 0 means DefaultBasePort.
	BasePort int
	Timeout  time.Duration // from SIGTERM to SIGKILL; 0 means DefaultTimeout
	Out      io.Writer     // the prefixed lines; nil discards them
	Color    bool          // ANSI colours in prefixes
	Now      func() time.Time
}

// Run starts every instance and waits. When one exits by itself or ctx is
// cancelled, it sends SIGTERM to every process group, SIGKILL to those
// still there after Timeout, and returns when all have exited.
//
// It returns nil when every instance stopped cleanly (cancellation is not
// an error), and otherwise an error naming each instance that failed: one
// that exited non-zero or by a signal on its own, or had to be killed.
func (r *Runner) Run(ctx context.Context) error {
	con, ins, err := r.prepare()
	if err != nil {
		return err
	}
	exits := make(chan exit, len(ins))
	drains := make(chan *instance, len(ins))
	var started []*instance
	var failures []string
	for _, in := range ins {
		if err := in.start(r.Dir, r.environ(in), con, exits, drains); err != nil {
			failures = append(failures, fmt.Sprintf("%s failed to start: %v", in.name, err))
			con.system("%s", failures[0])
			break
		}
		con.system("%s started with pid %d", in.name, in.cmd.Process.Pid)
		started = append(started, in)
	}
	if failures == nil {
		r.wait(ctx, con, exits, drains)
	}
	failures = append(failures, r.stop(con, started, exits, drains)...)
	if len(failures) > 0 {
		return errors.New("run: " + strings.Join(failures, "; "))
	}
	return nil
}

// prepare applies defaults and lays out the instances, numbering ports
// and picking colours in the file's order.
func (r *Runner) prepare() (*console, []*instance, error) {
	base := r.BasePort
	if base == 0 {
		base = DefaultBasePort
	}
	var ins []*instance
	width := len(systemName)
	for i, p := range r.Processes {
		for n := 0; n < p.Scale; n++ {
			in := &instance{
				name:    fmt.Sprintf("%s.%d", p.Name, n+1),
				color:   colors[len(ins)%len(colors)],
				port:    base + 100*i + n,
				command: p.Command,
			}
			width = max(width, len(in.name))
			ins = append(ins, in)
		}
	}
	if len(ins) == 0 {
		return nil, nil, errors.New("run: no processes to run")
	}
	con := &console{out: r.Out, color: r.Color, width: width, now: r.Now}
	if con.out == nil {
		con.out = io.Discard
	}
	if con.now == nil {
		con.now = time.Now
	}
	return con, ins, nil
}

// environ is in's environment: foreman's PORT and PS, and ferry's names.
func (r *Runner) environ(in *instance) []string {
	env := r.Env
	if env == nil {
		env = os.Environ()
	}
	proc, n, _ := strings.Cut(in.name, ".")
	return setenv(env, map[string]string{
		"PORT":           strconv.Itoa(in.port),
		"PS":             in.name,
		"FERRY_APP":      r.App,
		"FERRY_PROCESS":  proc,
		"FERRY_INSTANCE": n,
	})
}

// wait blocks until an instance's shell exits by itself or ctx is done.
func (r *Runner) wait(ctx context.Context, con *console, exits <-chan exit, drains <-chan *instance) {
	for {
		select {
		case e := <-exits:
			e.in.exited = true
			what, clean := e.in.describe(false)
			con.system("%s %s", e.in.name, what)
			if !clean {
				e.in.failure = e.in.name + " " + what
			}
			return
		case in := <-drains:
			// It closed its output but runs on; only its exit matters.
			in.drained = true
		case <-ctx.Done():
			return
		}
	}
}

// stop sends SIGTERM to every group, SIGKILL after Timeout to any whose
// processes are still there, reaps every shell and prints all output. It
// returns the failures, in the order the instances were started.
func (r *Runner) stop(con *console, started []*instance, exits <-chan exit, drains <-chan *instance) []string {
	timeout := r.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	// Before SIGKILL, an instance has stopped when its shell has exited and
	// nothing it started holds its output: the pipe's EOF is the one event
	// that says a whole group is gone. After SIGKILL only the shell counts,
	// since something outside the group may hold the pipe forever.
	killed := false
	running := func() bool {
		for _, in := range started {
			if !in.exited || !killed && !in.drained {
				return true
			}
		}
		return false
	}
	if running() {
		con.system("sending SIGTERM to all processes")
	}
	for _, in := range started {
		in.signal(unix.SIGTERM)
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for running() {
		select {
		case e := <-exits:
			e.in.exited = true
			what, clean := e.in.describe(true)
			con.system("%s %s", e.in.name, what)
			if !clean && e.in.failure == "" {
				e.in.failure = e.in.name + " " + what
			}
		case in := <-drains:
			in.drained = true
		case <-timer.C:
			killed = true
			con.system("sending SIGKILL to all processes")
			for _, in := range started {
				switch {
				case !in.exited:
					in.failure = fmt.Sprintf("%s did not stop within %v of SIGTERM and was killed", in.name, timeout)
				case !in.drained:
					in.failure = fmt.Sprintf("%s left processes that did not stop within %v of SIGTERM; they were killed", in.name, timeout)
				default:
					continue
				}
				in.signal(unix.SIGKILL)
			}
		}
	}
	// Whatever is left in a group (something that closed its output and
	// ignored SIGTERM) must not outlive the run.
	var failures []string
	for _, in := range started {
		in.signal(unix.SIGKILL)
		in.out.SetReadDeadline(time.Now().Add(drainGrace))
		<-in.copied
		in.out.Close()
		if in.failure != "" {
			failures = append(failures, in.failure)
		}
	}
	return failures
}
