// Package testenv holds the helpers ferry's tests share, so that each habit
// of STYLE.md is written once: wait for a condition with a deadline instead
// of sleeping, and treat a missing program or privilege the same way
// everywhere — the test skips on a developer's machine and fails in CI
// (the CI environment variable set), where scripts/install-deps.sh has
// installed everything and a skip would hide a test that never ran.
//
// It imports only the standard library, so any test in the module,
// graceful's included, can use it.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"
)

// pollEvery is how often WaitFor looks again: short enough that a test
// waits about as long as the state takes to change, long enough that
// polling does not compete with the code under test for the CPU.
const pollEvery = 5 * time.Millisecond

// InCI reports whether the tests run in CI, where every dependency must
// be present.
func InCI() bool { return os.Getenv("CI") != "" }

// SkipUnlessCI skips the test because something it needs is missing, or
// fails it when InCI: there the dependency was meant to be installed.
func SkipUnlessCI(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if InCI() {
		t.Fatalf("%s (CI is set, so this fails instead of skipping)", msg)
	}
	t.Skip(msg)
}

// SkipUnlessCIRoot is SkipUnlessCI for what only root can have (a tmpfs
// mount, network namespaces): it fails only in CI running as root, and
// skips anywhere else.
func SkipUnlessCIRoot(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getuid() == 0 {
		SkipUnlessCI(t, format, args...)
	}
	t.Skipf(format, args...)
}

// NeedCommand returns the path of the program name, looked up in $PATH.
// When it is missing the test skips, or fails in CI.
func NeedCommand(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		SkipUnlessCI(t, "%s is not installed (scripts/install-deps.sh installs it): %v", name, err)
	}
	return p
}

// WaitFor calls cond until it returns true, failing the test when it has
// not within the given time. what names the awaited state in the failure:
// "web-1 reports v2", not "condition". Like t.Fatal, call it from the
// test's goroutine.
func WaitFor(t testing.TB, what string, within time.Duration, cond func() bool) {
	t.Helper()
	if waited, ok := poll(within, cond); !ok {
		t.Fatalf("timed out after %v waiting for %s", waited, what)
	}
}

// WaitForValue is WaitFor for a condition on a value the test reads
// anyway: get returns the value and whether it is the awaited one, and
// WaitForValue returns the first value that is. The last value read is in
// the failure: what the state was when time ran out is usually why.
func WaitForValue[T any](t testing.TB, what string, within time.Duration, get func() (T, bool)) T {
	t.Helper()
	var v T
	waited, ok := poll(within, func() bool {
		var ok bool
		v, ok = get()
		return ok
	})
	if !ok {
		t.Fatalf("timed out after %v waiting for %s; last value: %+v", waited, what, v)
	}
	return v
}

// poll calls cond every pollEvery until it holds or within has passed,
// and says how long it waited. cond runs at least once.
func poll(within time.Duration, cond func() bool) (time.Duration, bool) {
	start := time.Now()
	deadline := start.Add(within)
	for {
		if cond() {
			return time.Since(start), true
		}
		if time.Now().After(deadline) {
			return time.Since(start).Round(time.Millisecond), false
		}
		time.Sleep(pollEvery)
	}
}

// Always calls cond for the whole of during and fails the test the first
// time it returns false: for what must not happen (a retry, a restart),
// where there is no state to wait for, only a time to watch. Polling
// catches a change that comes and goes, which one look at the end misses.
func Always(t testing.TB, what string, during time.Duration, cond func() bool) {
	t.Helper()
	start := time.Now()
	for {
		if !cond() {
			t.Fatalf("%s: not so after %v", what, time.Since(start).Round(time.Millisecond))
		}
		if time.Since(start) >= during {
			return
		}
		time.Sleep(pollEvery)
	}
}

// BlockedIn reports whether some goroutine is blocked in the function fn
// itself — on a channel operation or a select in fn's own body, not in a
// function fn called — where fn is the name as a stack trace prints it,
// e.g. "github.com/ferrydeploy/ferry/internal/server.(*Server).acquireLock".
// Wait on it for the states nothing else shows, such as "the request now
// waits for the lock"; where the code under test records the state, wait
// on that instead. A rename of fn makes the wait time out, naming fn.
func BlockedIn(fn string) bool {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	for _, g := range strings.Split(string(buf), "\n\n") {
		// "goroutine 7 [chan receive, 2 minutes]:" then frames, each a
		// call line and a tab-indented file line.
		header, frames, _ := strings.Cut(g, "\n")
		_, st, _ := strings.Cut(header, "[")
		st, _, _ = strings.Cut(st, "]")
		st, _, _ = strings.Cut(st, ",")
		if st == "" || st == "running" || st == "runnable" || st == "syscall" {
			continue
		}
		for _, line := range strings.Split(frames, "\n") {
			if line == "" || strings.HasPrefix(line, "\t") || strings.HasPrefix(line, "runtime.") {
				continue
			}
			if strings.HasPrefix(line, fn+"(") {
				return true
			}
			break // blocked deeper: in something fn called
		}
	}
	return false
}
