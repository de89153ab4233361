// Package health checks that one process instance is healthy, for the host
// agent, with the semantics of Kubernetes probes: an HTTP GET, a TCP
// connect or a command, run at an interval with a timeout, flipping the
// instance's status only after a number of consecutive results, with a
// start period (as Docker's start_period) that forgives a slow start.
package health

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/ferrydeploy/ferry"
)

// Status is what the checks say about an instance (the wire's type).
type Status = ferry.HealthStatus

// The statuses, as `ferry agent status` reports them.
const (
	Unknown   = ferry.HealthUnknown
	Healthy   = ferry.Healthy
	Unhealthy = ferry.Unhealthy
)

// Defaults for a Checker's zero fields, as ferry.yaml documents them.
const (
	DefaultInterval  = 2 * time.Second
	DefaultTimeout   = time.Second
	DefaultHealthy   = 1
	DefaultUnhealthy = 3
)

// New builds the Checker for h of an instance listening on 127.0.0.1:port
// (port 0: none), running exec checks in dir with env. Zero fields of h get
// the defaults. It fails when h does not ask for exactly one kind of check,
// when an http or tcp check has no port to go to, or when a number is
// negative.
func New(h ferry.Health, port int, dir string, env []string) (*Checker, error) {
	return NewAs(h, port, dir, env, nil)
}

// NewAs is New with exec checks run as cred's user (nil: the agent's).
func NewAs(h ferry.Health, port int, dir string, env []string, cred *syscall.Credential) (*Checker, error) {
	var p Prober
	kinds := 0
	if h.HTTP != "" {
		kinds++
		p = HTTP(fmt.Sprintf("http://127.0.0.1:%d%s", port, h.HTTP), h.Status)
	}
	if h.TCP {
		kinds++
		p = TCP(fmt.Sprintf("127.0.0.1:%d", port))
	}
	if h.Exec != "" {
		kinds++
		p = &execProber{command: h.Exec, dir: dir, env: env, cred: cred}
	}
	switch {
	case kinds != 1:
		return nil, errors.New("health: set exactly one of http, tcp, exec")
	case (h.HTTP != "" || h.TCP) && port == 0:
		return nil, errors.New("health: http and tcp checks need the process to have a port")
	case port < 0 || port > 65535:
		return nil, fmt.Errorf("health: port %d out of range", port)
	case h.HTTP != "" && h.HTTP[0] != '/':
		return nil, fmt.Errorf("health: http: %q must be a path starting with /", h.HTTP)
	case h.Status != 0 && (h.Status < 100 || h.Status > 599):
		return nil, fmt.Errorf("health: status %d is not an HTTP status", h.Status)
	case h.Interval < 0 || h.Timeout < 0 || h.StartPeriod < 0:
		return nil, errors.New("health: interval, timeout and start_period must not be negative")
	case h.Healthy < 0 || h.Unhealthy < 0:
		return nil, errors.New("health: healthy and unhealthy must be positive")
	}
	c := &Checker{
		Probe:       p,
		Interval:    h.Interval,
		Timeout:     h.Timeout,
		Healthy:     h.Healthy,
		Unhealthy:   h.Unhealthy,
		StartPeriod: h.StartPeriod,
	}
	c.Interval, c.Timeout, c.Healthy, c.Unhealthy = c.settings()
	return c, nil
}

// Checker runs a Prober and turns its results into a Status. Set its fields
// before Run; zero ones take the defaults.
type Checker struct {
	Probe     Prober
	Interval  time.Duration // from the end of one probe to the start of the next
	Timeout   time.Duration // a probe still running after this fails
	Healthy   int           // consecutive successes that make it Healthy
	Unhealthy int           // consecutive failures that make it Unhealthy
	// StartPeriod forgives a slow start: failures during it, counted from
	// Run, do not count towards Unhealthy. As Docker's start_period, it ends
	// early at the first success, since from then on the instance has
	// started and a failure means something.
	StartPeriod time.Duration
	// OnChange, if set, is called from Run's goroutine whenever the status
	// changes, with the probe error that made it change (nil for Healthy).
	// Run waits for it, so it should be quick.
	OnChange func(s Status, err error)

	mu     sync.Mutex
	status Status
	err    error
}

// Status returns the current status, Unknown until the first change, and
// the last probe's error (nil after a success). It is safe to call from any
// goroutine.
func (c *Checker) Status() (Status, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.status == "" {
		return Unknown, c.err
	}
	return c.status, c.err
}

// Run probes at Interval, the first time at once, until ctx is done. It
// returns promptly when ctx is done even in the middle of a probe, without
// counting that probe. Call it once per Checker.
func (c *Checker) Run(ctx context.Context) {
	interval, timeout, healthy, unhealthy := c.settings()
	startEnd := time.Now().Add(c.StartPeriod)
	var successes, failures int
	next := time.NewTimer(0)
	defer next.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-next.C:
		}
		started := time.Now()
		err := c.probe(ctx, timeout)
		if ctx.Err() != nil {
			return // the probe was cut short; its result means nothing
		}
		s, _ := c.Status()
		if err == nil {
			failures = 0
			successes = min(successes+1, healthy)
			if started.Before(startEnd) {
				startEnd = started // a success ends the start period
			}
			if successes == healthy {
				s = Healthy
			}
		} else {
			successes = 0
			if !started.Before(startEnd) {
				failures = min(failures+1, unhealthy)
			}
			if failures == unhealthy {
				s = Unhealthy
			}
		}
		if c.set(s, err) && c.OnChange != nil {
			c.OnChange(s, err)
		}
		next.Reset(interval)
	}
}

// timeoutError is the cause of a probe's ctx running out, so that probers'
// errors say how long they were given.
type timeoutError time.Duration

func (e timeoutError) Error() string {
	return fmt.Sprintf("timed out after %v", time.Duration(e))
}

// Is makes a timeout a context.DeadlineExceeded, as it is one.
func (e timeoutError) Is(target error) bool { return target == context.DeadlineExceeded }

// probe runs one probe with timeout, or less when ctx is done first.
func (c *Checker) probe(ctx context.Context, timeout time.Duration) error {
	pctx, cancel := context.WithTimeoutCause(ctx, timeout, timeoutError(timeout))
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Probe.Probe(pctx) }()
	// A Prober should return once pctx is done; one that does not is not
	// waited for long, so neither a stuck check nor ctx can hang Run.
	late := time.NewTimer(timeout + time.Second)
	defer late.Stop()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-late.C:
		if s, ok := c.Probe.(fmt.Stringer); ok {
			return fmt.Errorf("%s: %w", s, timeoutError(timeout))
		}
		return timeoutError(timeout)
	}
}

// set records a probe's result and reports whether the status changed.
func (c *Checker) set(s Status, err error) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.status
	if old == "" {
		old = Unknown
	}
	c.status, c.err = s, err
	return s != old
}

func (c *Checker) settings() (interval, timeout time.Duration, healthy, unhealthy int) {
	interval, timeout, healthy, unhealthy = c.Interval, c.Timeout, c.Healthy, c.Unhealthy
	if interval <= 0 {
		interval = DefaultInterval
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	if healthy <= 0 {
		healthy = DefaultHealthy
	}
	if unhealthy <= 0 {
		unhealthy = DefaultUnhealthy
	}
	return interval, timeout, healthy, unhealthy
}
