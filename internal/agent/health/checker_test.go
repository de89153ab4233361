package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry"
)

var errDown = errors.New("down")

// scripted is a Prober whose results the test hands over one at a time, so
// it knows exactly which results the Checker has seen.
type scripted struct {
	asked   chan struct{}
	results chan error
}

func newScripted() *scripted {
	return &scripted{asked: make(chan struct{}), results: make(chan error)}
}

func (p *scripted) Probe(ctx context.Context) error {
	select {
	case p.asked <- struct{}{}:
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	select {
	case err := <-p.results:
		return err
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// feed gives p's Checker results, then waits until it asks for the next,
// by which time it has acted on the last one.
func (p *scripted) feed(t *testing.T, results ...error) {
	t.Helper()
	for _, err := range results {
		p.wait(t)
		p.results <- err
	}
	p.wait(t)
}

func (p *scripted) wait(t *testing.T) {
	t.Helper()
	select {
	case <-p.asked:
	case <-time.After(5 * time.Second):
		t.Fatal("the checker did not probe")
	}
}

type change struct {
	s   Status
	err error
}

func (c change) String() string { return fmt.Sprintf("%s(%v)", c.s, c.err) }

// run starts c.Run and returns the channel of its OnChange calls and a
// stop that cancels it and fails t unless Run returns promptly.
func run(t *testing.T, c *Checker) (<-chan change, func()) {
	t.Helper()
	changes := make(chan change, 100)
	c.OnChange = func(s Status, err error) { changes <- change{s, err} }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		c.Run(ctx)
		close(done)
	}()
	stopped := false
	stop := func() {
		t.Helper()
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case <-done:
		case <-time.After(time.Second):
			t.Fatal("Run did not return within 1s of cancel")
		}
	}
	t.Cleanup(stop)
	return changes, stop
}

// next waits for the next OnChange call and checks it is to want with an
// error containing errWant ("" for none).
func next(t *testing.T, changes <-chan change, want Status, errWant string) {
	t.Helper()
	select {
	case ch := <-changes:
		if ch.s != want {
			t.Fatalf("changed to %v, want %s", ch, want)
		}
		checkErr(t, ch.err, errWant)
	case <-time.After(5 * time.Second):
		t.Fatalf("no change to %s within 5s", want)
	}
}

func TestCheckerThresholds(t *testing.T) {
	ok := error(nil)
	tests := []struct {
		name               string
		healthy, unhealthy int
		startPeriod        time.Duration
		results            []error
		want               []Status
	}{
		{"one success", 1, 3, 0, []error{ok}, []Status{Healthy}},
		{"defaults", 0, 0, 0, []error{errDown, errDown, ok, errDown, errDown, errDown}, []Status{Healthy, Unhealthy}},
		{"too few failures", 1, 3, 0, []error{errDown, errDown}, nil},
		{"failures from unknown", 1, 3, 0, []error{errDown, errDown, errDown}, []Status{Unhealthy}},
		{"a failure resets the successes", 2, 3, 0, []error{ok, errDown, ok}, nil},
		{"a success resets the failures", 1, 2, 0, []error{ok, errDown, ok, errDown}, []Status{Healthy}},
		{"flip both ways", 2, 2, 0, []error{ok, errDown, ok, ok, ok, errDown, errDown, errDown, ok, ok}, []Status{Healthy, Unhealthy, Healthy}},
		{"start period forgives failures", 1, 1, time.Hour, []error{errDown, errDown, errDown, errDown}, nil},
		{"a success counts in the start period and ends it", 1, 1, time.Hour, []error{errDown, errDown, ok, errDown}, []Status{Healthy, Unhealthy}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newScripted()
			c := &Checker{Probe: p, Interval: time.Millisecond, Timeout: time.Minute,
				Healthy: tt.healthy, Unhealthy: tt.unhealthy, StartPeriod: tt.startPeriod}
			changes, stop := run(t, c)
			p.feed(t, tt.results...)
			stop()
			var got []Status
			for len(changes) > 0 { // Run has returned: no more will come
				ch := <-changes
				got = append(got, ch.s)
				if wantErr := map[Status]error{Healthy: nil, Unhealthy: errDown}[ch.s]; ch.err != wantErr {
					t.Errorf("changed to %v, want error %v", ch, wantErr)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("changes %v, want %v", got, tt.want)
			}
			wantStatus, wantErr := Unknown, tt.results[len(tt.results)-1]
			if len(tt.want) > 0 {
				wantStatus = tt.want[len(tt.want)-1]
			}
			if s, err := c.Status(); s != wantStatus || err != wantErr {
				t.Errorf("Status() = %s, %v; want %s, %v", s, err, wantStatus, wantErr)
			}
		})
	}
}

func TestCheckerStartPeriod(t *testing.T) {
	var probes atomic.Int32
	const period = 300 * time.Millisecond
	c := &Checker{
		Probe: proberFunc(func(context.Context) error {
			probes.Add(1)
			return errDown
		}),
		Interval: 10 * time.Millisecond, Unhealthy: 1, StartPeriod: period,
	}
	start := time.Now()
	changes, _ := run(t, c)
	next(t, changes, Unhealthy, "down")
	if took := time.Since(start); took < period {
		t.Errorf("unhealthy after %v, inside the start period of %v", took, period)
	}
	if n := probes.Load(); n < 3 {
		t.Errorf("%d probes before the flip, want several failures forgiven", n)
	}
}

type proberFunc func(context.Context) error

func (f proberFunc) Probe(ctx context.Context) error { return f(ctx) }

func TestCheckerHTTP(t *testing.T) {
	var code atomic.Int32
	code.Store(http.StatusOK)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(int(code.Load()))
	}))
	defer srv.Close()

	h := ferry.Health{HTTP: "/healthz", Interval: 10 * time.Millisecond, Timeout: time.Second, Healthy: 2, Unhealthy: 2}
	c, err := New(h, port(t, srv.Listener.Addr()), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if s, err := c.Status(); s != Unknown || err != nil {
		t.Errorf("before Run: Status() = %s, %v; want unknown, nil", s, err)
	}
	changes, _ := run(t, c)
	// Status from this goroutine while Run writes it: the race detector
	// checks it is safe.
	stopPolling := pollStatus(c)
	defer stopPolling()

	next(t, changes, Healthy, "")
	code.Store(http.StatusServiceUnavailable)
	next(t, changes, Unhealthy, "status 503, want 2xx or 3xx")
	if s, err := c.Status(); s != Unhealthy || err == nil {
		t.Errorf("Status() = %s, %v; want unhealthy and an error", s, err)
	}
	code.Store(http.StatusNoContent)
	next(t, changes, Healthy, "")
}

func pollStatus(c *Checker) (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				c.Status()
			}
		}
	}()
	return func() { close(done) }
}

func TestCheckerTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conn.Close()
		}
	}()
	c, err := New(ferry.Health{TCP: true, Interval: 10 * time.Millisecond, Unhealthy: 2}, port(t, ln.Addr()), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	changes, _ := run(t, c)
	next(t, changes, Healthy, "")
	ln.Close()
	next(t, changes, Unhealthy, "connection refused")
}

func TestCheckerTimeout(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	defer srv.Close()
	pidFile := filepath.Join(t.TempDir(), "pid")

	tests := []struct {
		name    string
		h       ferry.Health
		wantErr string
	}{
		{"http", ferry.Health{HTTP: "/slow"}, "GET " + srv.URL + "/slow: timed out after 500ms"},
		{"exec", ferry.Health{Exec: "echo $$ >>" + pidFile + "; echo waiting; sleep 100 & sleep 10"},
			`exec "echo $$ >>` + pidFile + `; echo waiting; sleep 100 & sleep 10": timed out after 500ms; output: "waiting"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Long enough for a loaded machine to start the shell and let it
			// print before the deadline.
			tt.h.Interval, tt.h.Timeout, tt.h.Unhealthy = 10*time.Millisecond, 500*time.Millisecond, 1
			c, err := New(tt.h, port(t, srv.Listener.Addr()), "", nil)
			if err != nil {
				t.Fatal(err)
			}
			changes, stop := run(t, c)
			select {
			case ch := <-changes:
				if ch.s != Unhealthy {
					t.Fatalf("changed to %v, want unhealthy", ch)
				}
				checkErr(t, ch.err, tt.wantErr)
				if !errors.Is(ch.err, context.DeadlineExceeded) {
					t.Errorf("%v is not a context.DeadlineExceeded", ch.err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no change within 5s")
			}
			stop()
			if tt.h.Exec != "" {
				waitGroupsGone(t, readPids(t, pidFile))
			}
		})
	}
}

// TestCheckerLateProber checks that a Prober ignoring its ctx cannot stall
// the checks: it fails a little after the timeout.
func TestCheckerLateProber(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	c := &Checker{
		Probe:    stuck(release),
		Interval: 10 * time.Millisecond, Timeout: 50 * time.Millisecond, Unhealthy: 1,
	}
	changes, _ := run(t, c)
	next(t, changes, Unhealthy, "health.stuck: timed out after 50ms")
}

// stuck is a Prober that ignores its ctx and returns only once release is
// closed.
type stuck chan struct{}

func (s stuck) Probe(context.Context) error {
	<-s
	return nil
}

func (s stuck) String() string { return "health.stuck" }

func TestCheckerStopsMidProbe(t *testing.T) {
	t.Run("stuck prober", func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		probing := make(chan struct{})
		c := &Checker{Probe: proberFunc(func(ctx context.Context) error {
			close(probing)
			return stuck(release).Probe(ctx)
		}), Timeout: time.Minute}
		_, stop := run(t, c)
		<-probing
		stop()
		if s, err := c.Status(); s != Unknown || err != nil {
			t.Errorf("Status() = %s, %v; want the cut probe not counted", s, err)
		}
	})
	t.Run("exec", func(t *testing.T) {
		pidFile := filepath.Join(t.TempDir(), "pid")
		h := ferry.Health{Exec: "echo $$ >>" + pidFile + "; sleep 10", Timeout: time.Minute}
		c, err := New(h, 0, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		_, stop := run(t, c)
		deadline := time.Now().Add(5 * time.Second)
		for {
			if b, _ := os.ReadFile(pidFile); strings.HasSuffix(string(b), "\n") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the exec check did not start")
			}
			time.Sleep(5 * time.Millisecond)
		}
		stop()
		waitGroupsGone(t, readPids(t, pidFile))
	})
}

func TestNew(t *testing.T) {
	tests := []struct {
		name      string
		h         ferry.Health
		port      int
		wantProbe string // the Prober's String
		wantErr   string
	}{
		{"http", ferry.Health{HTTP: "/healthz"}, 8080, "GET http://127.0.0.1:8080/healthz", ""},
		{"tcp", ferry.Health{TCP: true}, 8080, "dial tcp 127.0.0.1:8080", ""},
		{"exec without a port", ferry.Health{Exec: "true"}, 0, `exec "true"`, ""},
		{"http without a port", ferry.Health{HTTP: "/healthz"}, 0, "", "http and tcp checks need the process to have a port"},
		{"tcp without a port", ferry.Health{TCP: true}, 0, "", "http and tcp checks need the process to have a port"},
		{"no check", ferry.Health{Interval: time.Second}, 8080, "", "set exactly one of http, tcp, exec"},
		{"two checks", ferry.Health{TCP: true, Exec: "true"}, 8080, "", "set exactly one of http, tcp, exec"},
		{"not a path", ferry.Health{HTTP: "healthz"}, 8080, "", `"healthz" must be a path starting with /`},
		{"bad status", ferry.Health{HTTP: "/", Status: 42}, 8080, "", "status 42 is not an HTTP status"},
		{"bad port", ferry.Health{TCP: true}, 70000, "", "port 70000 out of range"},
		{"negative interval", ferry.Health{TCP: true, Interval: -time.Second}, 8080, "", "must not be negative"},
		{"negative threshold", ferry.Health{TCP: true, Unhealthy: -1}, 8080, "", "must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(tt.h, tt.port, "", nil)
			checkErr(t, err, tt.wantErr)
			if err != nil {
				if !strings.HasPrefix(err.Error(), "health: ") {
					t.Errorf("error %q lacks the health: prefix", err)
				}
				return
			}
			if got := fmt.Sprint(c.Probe); got != tt.wantProbe {
				t.Errorf("probe %s, want %s", got, tt.wantProbe)
			}
			if c.Interval != DefaultInterval || c.Timeout != DefaultTimeout || c.Healthy != DefaultHealthy || c.Unhealthy != DefaultUnhealthy || c.StartPeriod != 0 {
				t.Errorf("settings %v %v %d %d %v, want the defaults", c.Interval, c.Timeout, c.Healthy, c.Unhealthy, c.StartPeriod)
			}
		})
	}
}

func port(t *testing.T, addr net.Addr) int {
	t.Helper()
	a, ok := addr.(*net.TCPAddr)
	if !ok {
		t.Fatalf("%v is not a TCP address", addr)
	}
	return a.Port
}
