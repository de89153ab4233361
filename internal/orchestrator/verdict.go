package orchestrator

import (
	"cmp"
	"fmt"
	"strings"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
)

// Check is what the verdict on one host of a deployment's batch looks at:
// the deployment's release, the batch's clock, and what the host last said.
type Check struct {
	Release       int    // the release rolled out; 0 removes the app
	SHA256        string // its artifact
	HealthTimeout time.Duration
	// BatchStart is when the batch's desired states were written: a
	// report from before it judges nothing, either way.
	BatchStart time.Time
	Deadline   time.Time // BatchStart + HealthTimeout
	// HostLostAfter fails a host that has not been heard from for so long.
	HostLostAfter time.Duration

	Reported   bool           // the host has a stored report
	ReportedAt time.Time      // when that report arrived
	App        *api.AppStatus // the app in it; nil when the host reports no such app
	// LastSeen is when the host was last heard from: its last report,
	// stored or not yet, or when it joined.
	LastSeen time.Time
	Now      time.Time
}

// Result is a host's verdict: State is ferry.HostHealthy, ferry.HostFailed (with
// Error, and the agent's Failure when it reported one), or ferry.HostDeploying
// while there is nothing to decide yet.
type Result struct {
	State   ferry.HostRolloutState
	Error   string
	Failure *ferry.Failure
}

// Verdict decides whether a host's report shows the release running with
// every process healthy, shows it failed (rejected by the agent, failed
// there), or neither yet; and, when neither, whether the host is lost or
// the health timeout has passed. It reads no clock: Now is given.
func Verdict(c Check) Result {
	ok, why, failure := judge(c)
	// A report from before this batch judges nothing, either way: it may
	// show the release a dead agent was asked to run, or a refusal the
	// host has since got over (a release signed after it was refused, a
	// rollback to what the host still runs).
	stale := c.Reported && c.ReportedAt.Before(c.BatchStart)
	if stale {
		ok, why, failure = false, "", nil
	}
	switch {
	case ok:
		return Result{State: ferry.HostHealthy}
	case why == "" && c.Now.Sub(c.LastSeen) > c.HostLostAfter:
		why = fmt.Sprintf("host lost: no report since %s", c.LastSeen.Format(time.RFC3339))
	case why == "" && c.Now.After(c.Deadline) && stale:
		why = fmt.Sprintf("release %s not confirmed within %s: no report since %s", label(c.Release), c.HealthTimeout, c.ReportedAt.Format(time.RFC3339))
	case why == "" && c.Now.After(c.Deadline):
		why = fmt.Sprintf("release %s not running healthy after %s%s", label(c.Release), c.HealthTimeout, progress(c.App))
	}
	if why == "" {
		return Result{State: ferry.HostDeploying}
	}
	return Result{State: ferry.HostFailed, Error: why, Failure: failure}
}

// judge says whether the report shows c's release running with every
// process healthy, or why it failed there, with the agent's own account.
// Neither (ok false, why "") means not yet.
func judge(c Check) (ok bool, why string, failure *ferry.Failure) {
	as := c.App
	if c.Release == 0 { // the app is being removed
		return c.Reported && (as == nil || as.State == ferry.AppStopped), "", nil
	}
	if as == nil {
		return false, "", nil
	}
	want := label(c.Release)
	if rj := as.Rejected; rj != nil && (rj.Number == c.Release || (rj.Number == 0 && rj.SHA256 == c.SHA256)) {
		return false, "release " + want + ": " + failureText(as, "rejected by the agent"), as.Failure
	}
	if as.Number != c.Release && (as.Number != 0 || as.SHA256 != c.SHA256) {
		return false, "", nil
	}
	switch as.State {
	case ferry.AppFailed:
		return false, "release " + want + ": " + failureText(as, "failed"), as.Failure
	case ferry.AppRunning:
	default:
		return false, "", nil
	}
	for _, p := range as.Processes {
		if p.Health != ferry.Healthy {
			return false, "", nil
		}
	}
	return true, "", nil
}

// failureText is what the agent said went wrong, without its own name for
// the release (the server names it): the Failure's message, or def.
func failureText(as *api.AppStatus, def string) string {
	switch {
	case as.Failure != nil && as.Failure.Message != "":
		msg := as.Failure.Message
		if as.Failure.RolledBackTo != "" {
			msg += "; rolled back to " + as.Failure.RolledBackTo
		}
		return msg
	case as.Error != "":
		return as.Error
	}
	return def
}

// progress describes what a host last said about the app.
func progress(as *api.AppStatus) string {
	if as == nil {
		return " (the host has not reported the app)"
	}
	var bad []string
	for _, p := range as.Processes {
		if p.Health != ferry.Healthy {
			s := fmt.Sprintf("%s.%d is %s", p.Process, p.Instance, cmp.Or(string(p.Health), "unknown"))
			if p.LastError != "" { // the check's last result: status and body, or the dial error
				s += " (" + p.LastError + ")"
			}
			bad = append(bad, s)
		}
	}
	s := fmt.Sprintf(" (the host reports %s %s", cmp.Or(as.Label, as.Release), as.State)
	if len(bad) > 0 {
		s += ": " + strings.Join(bad, ", ")
	}
	return s + ")"
}
