package testenv

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// recorder is a testing.TB that records how the helper ended the test
// instead of ending the real one. Fatal and Skip stop its goroutine as the
// real ones do, so code after them does not run.
type recorder struct {
	testing.TB
	fatal, skip string
}

func (r *recorder) Helper() {}
func (r *recorder) Fatalf(format string, args ...any) {
	r.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (r *recorder) Skip(args ...any) {
	r.skip = fmt.Sprint(args...)
	runtime.Goexit()
}
func (r *recorder) Skipf(format string, args ...any) {
	r.skip = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// run calls fn with a recorder in its own goroutine and reports whether fn
// returned (rather than failing or skipping).
func run(t *testing.T, fn func(tb testing.TB)) (r *recorder, returned bool) {
	r = &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(r)
		returned = true
	}()
	<-done
	return r, returned
}

func TestWaitFor(t *testing.T) {
	var calls atomic.Int32
	start := time.Now()
	r, returned := run(t, func(tb testing.TB) {
		WaitFor(tb, "three calls", 10*time.Second, func() bool { return calls.Add(1) == 3 })
	})
	if !returned || r.fatal != "" {
		t.Fatalf("WaitFor failed a condition that held on the third call: %q", r.fatal)
	}
	if calls.Load() != 3 {
		t.Errorf("cond called %d times, want 3", calls.Load())
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("WaitFor took %v for three polls: it sleeps too long between them", d)
	}
}

func TestWaitForTimesOut(t *testing.T) {
	start := time.Now()
	r, returned := run(t, func(tb testing.TB) {
		WaitFor(tb, "web-1 reports v2", 50*time.Millisecond, func() bool { return false })
	})
	if returned {
		t.Fatal("WaitFor returned for a condition that never held")
	}
	if !strings.Contains(r.fatal, "web-1 reports v2") || !strings.Contains(r.fatal, "timed out after") {
		t.Errorf("failure %q names neither what it waited for nor how long", r.fatal)
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Errorf("gave up after %v, before its 50ms", d)
	}
}

func TestWaitForValue(t *testing.T) {
	n := 0
	var got int
	r, returned := run(t, func(tb testing.TB) {
		got = WaitForValue(tb, "n at 4", 10*time.Second, func() (int, bool) { n++; return n, n == 4 })
	})
	if !returned || got != 4 {
		t.Fatalf("WaitForValue = %d (returned %v, %q), want 4", got, returned, r.fatal)
	}

	r, returned = run(t, func(tb testing.TB) {
		WaitForValue(tb, "state running", 20*time.Millisecond, func() (string, bool) { return "installing", false })
	})
	if returned || !strings.Contains(r.fatal, "state running") || !strings.Contains(r.fatal, "installing") {
		t.Errorf("timeout failure %q should name the wait and the last value", r.fatal)
	}
}

func TestMissingDependency(t *testing.T) {
	const missing = "ferry-testenv-no-such-program"
	for _, tc := range []struct {
		ci                 string
		wantFail, wantSkip bool
	}{
		{ci: "", wantSkip: true},
		{ci: "true", wantFail: true},
	} {
		t.Run("CI="+tc.ci, func(t *testing.T) {
			t.Setenv("CI", tc.ci)
			if InCI() != (tc.ci != "") {
				t.Errorf("InCI() = %v with CI=%q", InCI(), tc.ci)
			}
			r, returned := run(t, func(tb testing.TB) { NeedCommand(tb, missing) })
			if returned || (r.fatal != "") != tc.wantFail || (r.skip != "") != tc.wantSkip {
				t.Fatalf("NeedCommand of a missing program: returned %v, fatal %q, skip %q", returned, r.fatal, r.skip)
			}
			if msg := r.fatal + r.skip; !strings.Contains(msg, missing) || !strings.Contains(msg, "install-deps.sh") {
				t.Errorf("message %q should name the program and what installs it", msg)
			}

			var path string
			r, returned = run(t, func(tb testing.TB) { path = NeedCommand(tb, "sh") })
			if !returned || path == "" {
				t.Errorf("NeedCommand(sh) = %q, fatal %q, skip %q", path, r.fatal, r.skip)
			}

			r, returned = run(t, func(tb testing.TB) { SkipUnlessCIRoot(tb, "no tmpfs: %s", "EPERM") })
			wantFail := tc.wantFail && os.Getuid() == 0
			if returned || (r.fatal != "") != wantFail || !strings.Contains(r.fatal+r.skip, "no tmpfs: EPERM") {
				t.Errorf("SkipUnlessCIRoot as uid %d: returned %v, fatal %q, skip %q", os.Getuid(), returned, r.fatal, r.skip)
			}
		})
	}
}

func TestAlways(t *testing.T) {
	start := time.Now()
	r, returned := run(t, func(tb testing.TB) {
		Always(tb, "still v1", 30*time.Millisecond, func() bool { return true })
	})
	if !returned || r.fatal != "" {
		t.Fatalf("Always failed a condition that always held: %q", r.fatal)
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Errorf("Always watched for %v, want at least 30ms", d)
	}

	// A change that comes and goes is caught.
	var calls atomic.Int32
	r, returned = run(t, func(tb testing.TB) {
		Always(tb, "still v1", 10*time.Second, func() bool { return calls.Add(1) != 3 })
	})
	if returned || !strings.Contains(r.fatal, "still v1") {
		t.Errorf("Always let a condition that failed once pass: returned %v, %q", returned, r.fatal)
	}
}

// parkHere blocks on c in its own body, as the code BlockedIn looks for.
//
//go:noinline
func parkHere(c chan struct{}) { <-c }

// parkBelow blocks in a function it calls, not in its own body.
//
//go:noinline
func parkBelow(c chan struct{}) { parkHere(c) }

func TestBlockedIn(t *testing.T) {
	const here = "github.com/ferrydeploy/ferry/internal/testenv.parkHere"
	const below = "github.com/ferrydeploy/ferry/internal/testenv.parkBelow"
	if BlockedIn(here) {
		t.Fatal("BlockedIn found parkHere before it ran")
	}
	c := make(chan struct{})
	defer close(c)
	go parkBelow(c)
	WaitFor(t, "parkHere to block", 10*time.Second, func() bool { return BlockedIn(here) })
	if BlockedIn(below) {
		t.Error("BlockedIn counts a goroutine blocked in a callee as blocked in its caller")
	}
	if BlockedIn("github.com/ferrydeploy/ferry/internal/testenv.park") {
		t.Error("BlockedIn matches a prefix of a function's name")
	}
}
