package orchestrator

import (
	"reflect"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
)

func TestVerdict(t *testing.T) {
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	fresh := start.Add(2 * time.Second) // a report after the batch began
	old := start.Add(-time.Minute)      // one from before
	healthy := []api.ProcessStatus{{Process: "web", Instance: 1, Health: ferry.Healthy}}
	running := func(n int, procs ...api.ProcessStatus) *api.AppStatus {
		return &api.AppStatus{Release: ferry.FormatRelease(n) + "-1a2b3c4d", Label: ferry.FormatRelease(n), Number: n, SHA256: "sum2", State: ferry.AppRunning, Processes: procs}
	}
	startFail := &ferry.Failure{Kind: ferry.FailStart, Release: "v2-1a2b3c4d", Check: "web.1", Message: "exited with status 1"}
	rejectSig := &ferry.Failure{Kind: ferry.FailSignature, Message: "not signed by a trusted key"}
	tests := []struct {
		name string
		mod  func(c *Check)
		want Result
	}{
		{"running healthy", func(c *Check) { c.App = running(2, healthy...) }, Result{State: ferry.HostHealthy}},
		{"running, not yet healthy", func(c *Check) {
			c.App = running(2, api.ProcessStatus{Process: "web", Instance: 1, Health: ferry.HealthUnknown})
		}, Result{State: ferry.HostDeploying}},
		{"not yet reported", func(c *Check) { c.Reported, c.App, c.ReportedAt = false, nil, time.Time{} }, Result{State: ferry.HostDeploying}},
		{"reported without the app", func(c *Check) { c.App = nil }, Result{State: ferry.HostDeploying}},
		{"artifact matched when the agent knows no number", func(c *Check) {
			c.App = running(0, healthy...)
		}, Result{State: ferry.HostHealthy}},
		{"stale report of the release running judges nothing", func(c *Check) {
			c.App, c.ReportedAt, c.LastSeen = running(2, healthy...), old, c.Now
		}, Result{State: ferry.HostDeploying}},
		{"stale rejection judges nothing", func(c *Check) {
			c.App, c.ReportedAt, c.LastSeen = &api.AppStatus{State: ferry.AppFailed, Rejected: &ferry.DesiredApp{Number: 2}, Failure: rejectSig}, old, c.Now
		}, Result{State: ferry.HostDeploying}},
		{"rejected by the agent", func(c *Check) {
			c.App = &api.AppStatus{Number: 1, State: ferry.AppRunning, Rejected: &ferry.DesiredApp{Number: 2, SHA256: "sum2"}, Failure: rejectSig}
		}, Result{State: ferry.HostFailed, Error: "release v2: not signed by a trusted key", Failure: rejectSig}},
		{"rejected, by digest, without a message", func(c *Check) {
			c.App = &api.AppStatus{State: ferry.AppFailed, Rejected: &ferry.DesiredApp{SHA256: "sum2"}}
		}, Result{State: ferry.HostFailed, Error: "release v2: rejected by the agent"}},
		{"another release rejected", func(c *Check) {
			c.App = &api.AppStatus{State: ferry.AppFailed, Rejected: &ferry.DesiredApp{Number: 3, SHA256: "sum3"}, Failure: rejectSig}
		}, Result{State: ferry.HostDeploying}},
		{"failed", func(c *Check) {
			a := running(2)
			a.State, a.Failure = ferry.AppFailed, startFail
			c.App = a
		}, Result{State: ferry.HostFailed, Error: "release v2: exited with status 1", Failure: startFail}},
		{"failed and rolled back", func(c *Check) {
			a := running(2)
			f := *startFail
			f.RolledBackTo = "v1-0a0b0c0d"
			a.State, a.Failure = ferry.AppFailed, &f
			c.App = a
		}, Result{State: ferry.HostFailed, Error: "release v2: exited with status 1; rolled back to v1-0a0b0c0d", Failure: &ferry.Failure{Kind: ferry.FailStart, Release: "v2-1a2b3c4d", Check: "web.1", Message: "exited with status 1", RolledBackTo: "v1-0a0b0c0d"}}},
		{"failed, an older agent's error text", func(c *Check) {
			a := running(2)
			a.State, a.Error = ferry.AppFailed, "hook post exited 1"
			c.App = a
		}, Result{State: ferry.HostFailed, Error: "release v2: hook post exited 1"}},
		{"another release running", func(c *Check) { c.App = running(1, healthy...); c.App.SHA256 = "sum1" }, Result{State: ferry.HostDeploying}},
		{"removal: the app is gone", func(c *Check) { c.Release, c.SHA256, c.App = 0, "", nil }, Result{State: ferry.HostHealthy}},
		{"removal: the app stopped", func(c *Check) {
			c.Release, c.SHA256, c.App = 0, "", &api.AppStatus{Number: 1, State: ferry.AppStopped}
		}, Result{State: ferry.HostHealthy}},
		{"removal: still running", func(c *Check) { c.Release, c.SHA256, c.App = 0, "", running(1, healthy...) }, Result{State: ferry.HostDeploying}},
		{"removal: never reported", func(c *Check) { c.Release, c.SHA256, c.Reported, c.App = 0, "", false, nil }, Result{State: ferry.HostDeploying}},
		{"removal: stale report without the app", func(c *Check) {
			c.Release, c.SHA256, c.App, c.ReportedAt = 0, "", nil, old
		}, Result{State: ferry.HostDeploying}},
		{"host lost", func(c *Check) {
			c.App, c.ReportedAt, c.LastSeen = running(1, healthy...), old, old
		}, Result{State: ferry.HostFailed, Error: "host lost: no report since 2026-03-01T11:59:00Z"}},
		{"host lost wins over a pending timeout", func(c *Check) {
			c.Now = c.Deadline.Add(time.Second)
			c.App, c.ReportedAt, c.LastSeen = nil, old, old
		}, Result{State: ferry.HostFailed, Error: "host lost: no report since 2026-03-01T11:59:00Z"}},
		{"a failure is reported even from a host not heard from since", func(c *Check) {
			a := running(2)
			a.State, a.Failure = ferry.AppFailed, startFail
			c.App, c.LastSeen = a, old
		}, Result{State: ferry.HostFailed, Error: "release v2: exited with status 1", Failure: startFail}},
		{"timeout with a fresh report", func(c *Check) {
			c.Now = c.Deadline.Add(time.Millisecond)
			c.App = running(2, api.ProcessStatus{Process: "web", Instance: 2, Health: ferry.Unhealthy})
			c.LastSeen = c.Now
		}, Result{State: ferry.HostFailed, Error: "release v2 not running healthy after 1m0s (the host reports v2 running: web.2 is unhealthy)"}},
		{"timeout says what the check last said", func(c *Check) {
			c.Now = c.Deadline.Add(time.Millisecond)
			c.App = running(2, api.ProcessStatus{Process: "web", Instance: 1, Health: ferry.Unhealthy, LastError: `health: GET http://127.0.0.1:4321/healthz: status 500, want 2xx or 3xx; body: "db down"`})
			c.LastSeen = c.Now
		}, Result{State: ferry.HostFailed, Error: `release v2 not running healthy after 1m0s (the host reports v2 running: web.1 is unhealthy (health: GET http://127.0.0.1:4321/healthz: status 500, want 2xx or 3xx; body: "db down"))`}},
		{"timeout, the app not reported", func(c *Check) {
			c.Now, c.App, c.LastSeen = c.Deadline.Add(time.Millisecond), nil, c.Deadline
		}, Result{State: ferry.HostFailed, Error: "release v2 not running healthy after 1m0s (the host has not reported the app)"}},
		{"timeout with only a stale report", func(c *Check) {
			c.Now = c.Deadline.Add(time.Millisecond)
			c.App, c.ReportedAt, c.LastSeen = running(2, healthy...), old, c.Deadline // heard, not stored
		}, Result{State: ferry.HostFailed, Error: "release v2 not confirmed within 1m0s: no report since 2026-03-01T11:59:00Z"}},
		{"just before the deadline", func(c *Check) {
			c.Now, c.App, c.LastSeen = c.Deadline, running(1, healthy...), c.Deadline
		}, Result{State: ferry.HostDeploying}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := Check{
				Release: 2, SHA256: "sum2", HealthTimeout: time.Minute,
				BatchStart: start, Deadline: start.Add(time.Minute), HostLostAfter: 30 * time.Second,
				Reported: true, ReportedAt: fresh, LastSeen: fresh, Now: start.Add(5 * time.Second),
			}
			tc.mod(&c)
			if got := Verdict(c); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Verdict = %+v\n want %+v", got, tc.want)
			}
		})
	}
}

// TestVerdictGrace: the server gives the agents' own verdict time to come
// before its health timeout, bounded.
func TestVerdictGrace(t *testing.T) {
	for timeout, want := range map[time.Duration]time.Duration{
		3 * time.Second:  2300 * time.Millisecond,
		time.Minute:      8 * time.Second,
		10 * time.Minute: 10 * time.Second,
	} {
		if got := verdictGrace(timeout); got != want {
			t.Errorf("verdictGrace(%s) = %s, want %s", timeout, got, want)
		}
	}
}
