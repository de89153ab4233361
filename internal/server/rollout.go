package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/internal/repo"
)

// Host rollout states.
const (
	hostPending    = "pending"
	hostDeploying  = "deploying"
	hostHealthy    = "healthy"
	hostFailed     = "failed"
	hostRolledBack = "rolled-back"
)

// rolloutFailed is why a rollout stopped: one message per failed host.
type rolloutFailed struct{ msgs []string }

func (e *rolloutFailed) Error() string { return strings.Join(e.msgs, "; ") }

// start runs deployment id's rollout in the background, holding l.
func (s *Server) start(id string, l *lock) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running[id] || s.leadCtx == nil {
		// Not leading: the leader adopts the deployment, taking over its
		// lock, as soon as it sees the record.
		return
	}
	s.running[id] = true
	ctx := s.leadCtx
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() {
			s.mu.Lock()
			delete(s.running, id)
			s.mu.Unlock()
		}()
		s.rollout(ctx, id, l)
	}()
}

// resume adopts every deployment left running (by a stopped server, or a
// leader that died) and returns the revision of the listing.
func (s *Server) resume(ctx context.Context) (int64, error) {
	recs, rev, err := s.repo.AllDeployments(ctx)
	if err != nil {
		return 0, err
	}
	for _, rec := range recs {
		if runnable(rec) {
			s.adopt(ctx, rec)
		}
	}
	return rev, nil
}

// adopt drives rec unless this server already does: it takes over the
// deployment's lock (still held by whoever created the deployment, or by a
// leader that died) and starts the rollout.
func (s *Server) adopt(ctx context.Context, rec repo.Deployment) {
	s.mu.Lock()
	if s.running[rec.ID] || s.adopting[rec.ID] {
		s.mu.Unlock()
		return
	}
	s.adopting[rec.ID] = true
	s.mu.Unlock()
	s.log.Info("adopting rollout", logDeployment, rec.ID, logApp, rec.App, logGroup, rec.Group)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() {
			s.mu.Lock()
			delete(s.adopting, rec.ID)
			s.mu.Unlock()
		}()
		// A watch event may be older than the record: read it again
		// before taking the lock, and after, since a driver that just
		// finished it lets go of the lock before it records the end.
		stillRunnable := func() bool {
			cur, err := s.repo.Deployment(ctx, rec.ID)
			return err == nil && runnable(cur)
		}
		if !stillRunnable() {
			return
		}
		lr := repo.Lock{Lock: api.Lock{App: rec.App, Group: rec.Group, Owner: rec.By, Reason: "deploy " + label(rec.Release), Since: time.Now().UTC()}, Deployment: rec.ID}
		l, err := s.acquireLock(ctx, lr, lockTTL+5*time.Second)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			rec.Error = "could not resume: " + err.Error()
			s.finish(ctx, &rec, api.DeployFailed, "failed")
			return
		}
		s.mu.Lock()
		running := s.running[rec.ID]
		s.mu.Unlock()
		if !running && !stillRunnable() {
			s.release(ctx, l)
			return
		}
		s.start(rec.ID, l) // marks it running before adopting is cleared
	}()
}

// rollout drives deployment id to its end and lets go of its lock. When
// ctx ends (the server stops) it leaves the deployment running, for the
// next server to resume.
func (s *Server) rollout(ctx context.Context, id string, l *lock) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	kctx, stopKeep := context.WithCancel(ctx)
	go s.keep(kctx, l, func() { cancel(errLockLost) })
	// finish lets go of the lock before it records the end, so whoever
	// sees the deployment ended can deploy again at once.
	var once sync.Once
	s.mu.Lock()
	s.letGo[id] = func() { once.Do(func() { stopKeep(); s.release(ctx, l) }) }
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.letGo, id)
		s.mu.Unlock()
	}()
	rec, err := s.repo.Deployment(ctx, id)
	if err != nil {
		s.log.Error("rollout", logDeployment, id, logErr, err)
		return
	}
	err = s.drive(ctx, &rec)
	if errors.Is(context.Cause(ctx), errLockLost) {
		fctx := context.WithoutCancel(ctx)
		rec.Error = errLockLost.Error()
		s.finish(fctx, &rec, api.DeployFailed, "failed")
		return
	}
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		s.log.Error("rollout", logDeployment, id, logErr, err)
	}
	s.letGoOf(id)
}

// letGoOf releases the lock of deployment id's rollout, if it holds one.
func (s *Server) letGoOf(id string) {
	s.mu.Lock()
	f := s.letGo[id]
	s.mu.Unlock()
	if f != nil {
		f()
	}
}

// drive runs rec's batches and, when one fails and rec rolls back
// automatically, its rollback; it records the outcome.
func (s *Server) drive(ctx context.Context, rec *repo.Deployment) error {
	if rec.Child == "" {
		err := s.batches(ctx, rec)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var failed *rolloutFailed
		if !errors.As(err, &failed) {
			if err != nil {
				rec.Error = err.Error()
				return s.finish(ctx, rec, api.DeployFailed, "failed")
			}
			return s.succeed(ctx, rec)
		}
		rec.Error = err.Error()
		s.log.Warn("rollout failed", logDeployment, rec.ID, logApp, rec.App, logGroup, rec.Group, logErr, err)
		if !rec.AutoRollback || rec.Auto {
			return s.finish(ctx, rec, api.DeployFailed, "failed")
		}
		if err := s.startRollback(ctx, rec); err != nil {
			return err
		}
	}
	child, err := s.repo.Deployment(ctx, rec.Child)
	if err != nil {
		return err
	}
	if child.State == api.DeployRunning {
		if err := s.drive(ctx, &child); err != nil {
			return err
		}
	}
	if child.State != api.DeploySucceeded {
		rec.Error += "; rolling back failed: " + child.Error
		return s.finish(ctx, rec, api.DeployFailed, "failed")
	}
	for h, hr := range rec.Hosts {
		if hr.State == hostHealthy || hr.State == hostDeploying {
			hr.State = hostRolledBack
			rec.Hosts[h] = hr
		}
	}
	return s.finish(ctx, rec, api.DeployRolledBack, "rolled-back")
}

// startRollback records the automatic rollback of rec: every host rec
// touched goes back to rec.From, in batches of the same size.
func (s *Server) startRollback(ctx context.Context, rec *repo.Deployment) error {
	child := repo.Deployment{Auto: true, Deployment: api.Deployment{
		ID: newDeployID(), App: rec.App, Group: rec.Group, Release: rec.From, From: rec.Release,
		Strategy: rec.Strategy, Batch: rec.Batch, HealthTimeout: rec.HealthTimeout,
		State: api.DeployRunning, RollbackOf: rec.ID, By: rec.By, Started: time.Now().UTC(),
	}}
	if child.Strategy == api.StrategyCanary {
		child.Strategy = api.StrategyRolling
	}
	if rec.From != 0 {
		rel, found, err := s.repo.Release(ctx, rec.App, rec.From)
		if err != nil {
			return err
		}
		if !found {
			return ferry.Errorf(ferry.ENOTFOUND, "rolling back %s on %s: no release %s to go back to", rec.App, rec.Group, label(rec.From))
		}
		child.SHA256 = rel.SHA256
	}
	var touched []string
	for h, hr := range rec.Hosts {
		if hr.State != hostPending {
			touched = append(touched, h)
		}
	}
	slices.Sort(touched)
	plan(&child.Deployment, touched)
	if err := s.repo.CreateDeployment(ctx, child); err != nil {
		return err
	}
	rec.Child = child.ID
	return s.save(ctx, rec)
}

// batches rolls rec out batch by batch, skipping hosts already healthy
// (a resumed rollout), until done or a host fails.
func (s *Server) batches(ctx context.Context, rec *repo.Deployment) error {
	last := 0
	for _, hr := range rec.Hosts {
		last = max(last, hr.Batch)
	}
	target := repo.DesiredEntry{Release: rec.Release, SHA256: rec.SHA256, Group: rec.Group}
	for b := 0; b <= last; b++ {
		if rec.Strategy == api.StrategyCanary && b == 1 {
			if err := s.waitPromote(ctx, rec); err != nil {
				return err
			}
		}
		var hosts []string
		for _, h := range slices.Sorted(maps.Keys(rec.Hosts)) {
			if hr := rec.Hosts[h]; hr.Batch == b && hr.State != hostHealthy {
				hr.State = hostDeploying
				rec.Hosts[h] = hr
				hosts = append(hosts, h)
			}
		}
		if len(hosts) == 0 {
			continue
		}
		if err := s.save(ctx, rec); err != nil {
			return err
		}
		since := time.Now().UTC()
		if err := s.repo.SetDesiredMany(ctx, hosts, rec.App, target); err != nil {
			return err
		}
		if err := s.waitHealthy(ctx, rec, hosts, since); err != nil {
			return err
		}
	}
	return nil
}

// waitPromote parks a canary deployment until someone promotes it.
func (s *Server) waitPromote(ctx context.Context, rec *repo.Deployment) error {
	if rec.Promoted {
		return nil
	}
	rec.State = api.DeployWaiting
	if err := s.save(ctx, rec); err != nil {
		return err
	}
	key, err := s.repo.DeploymentKey(ctx, rec.ID)
	if err != nil {
		return err
	}
	var index int64
	for !rec.Promoted {
		val, idx, err := s.waitKey(ctx, key, index, time.Minute)
		if err != nil {
			return err
		}
		var cur repo.Deployment
		if err := unmarshalBytes(val, &cur); err != nil {
			return err
		}
		rec.Promoted, index = cur.Promoted, idx
	}
	rec.State = api.DeployRunning
	return s.save(ctx, rec)
}

// waitHealthy waits until every one of hosts reports rec's release
// running and healthy, or one fails: rejected by its agent, lost, or not
// healthy within the health timeout.
// Only reports received after since count, for success and failure alike.
func (s *Server) waitHealthy(ctx context.Context, rec *repo.Deployment, hosts []string, since time.Time) error {
	deadline := time.Now().Add(rec.HealthTimeout)
	known := map[string]repo.Host{}
	for _, name := range hosts {
		h, _, err := s.repo.Host(ctx, name)
		switch {
		case err == nil:
			known[name] = h
		case ferry.ErrorCode(err) != ferry.ENOTFOUND:
			return err
		}
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var events <-chan struct{}
	for {
		var waiting []string
		for _, h := range hosts {
			if rec.Hosts[h].State == hostDeploying {
				waiting = append(waiting, h)
			}
		}
		reps, rev, err := s.repo.HostReports(ctx, waiting)
		if err != nil {
			return err
		}
		if events == nil {
			events = s.nudges(wctx, prefixReports, rev)
		}
		var failed []string
		pending, changed := 0, false
		for _, h := range hosts {
			hr := rec.Hosts[h]
			if hr.State != hostDeploying {
				continue
			}
			rr, reported := reps[h]
			ok, why := check(rec, rr.State.Apps[rec.App], reported)
			// A report from before this batch judges nothing, either way:
			// it may show the release a dead agent was asked to run, or a
			// refusal the host has since got over (a release signed after
			// it was refused, a rollback to what the host still runs).
			stale := reported && rr.LastSeen.Before(since)
			if stale {
				ok, why = false, ""
			}
			seen := s.lastSeen(known[h], reps)
			switch {
			case ok:
				hr.State = hostHealthy
			case why == "" && time.Since(seen) > s.cfg.HostLostAfter:
				why = fmt.Sprintf("host lost: no report since %s", seen.Format(time.RFC3339))
			case why == "" && time.Now().After(deadline) && stale:
				why = fmt.Sprintf("release %s not confirmed within %s: no report since %s", label(rec.Release), rec.HealthTimeout, rr.LastSeen.Format(time.RFC3339))
			case why == "" && time.Now().After(deadline):
				why = fmt.Sprintf("release %s not running healthy after %s%s", label(rec.Release), rec.HealthTimeout, progress(rr.State.Apps[rec.App]))
			}
			if why != "" {
				hr.State, hr.Error = hostFailed, why
				failed = append(failed, h+": "+why)
			}
			if hr.State == hostDeploying {
				pending++
			} else {
				rec.Hosts[h], changed = hr, true
			}
		}
		if changed {
			if err := s.save(ctx, rec); err != nil {
				return err
			}
		}
		if len(failed) > 0 {
			return &rolloutFailed{msgs: failed}
		}
		if pending == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case _, ok := <-events:
			if !ok {
				events = nil // the watch ended: start another from a fresh listing
			}
		case <-time.After(min(time.Until(deadline), 500*time.Millisecond) + time.Millisecond):
		}
	}
}

// nudges sends on its channel whenever a key under prefix changes after
// rev, and closes it when the watch ends.
func (s *Server) nudges(ctx context.Context, prefix string, rev int64) <-chan struct{} {
	c := make(chan struct{}, 1)
	w, err := s.repo.Store().Watch(ctx, prefix, rev)
	if err != nil {
		close(c)
		return c
	}
	go func() {
		defer close(c)
		for range w.C {
			select {
			case c <- struct{}{}:
			default:
			}
		}
	}()
	return c
}

// check says whether a host's report of the app shows rec's release
// running with every process healthy, or why it failed there. Neither (ok
// false, why "") means not yet.
func check(rec *repo.Deployment, as *api.AppStatus, reported bool) (ok bool, why string) {
	if rec.Release == 0 { // the app is being removed
		return reported && (as == nil || as.State == ferry.AppStopped), ""
	}
	if as == nil {
		return false, ""
	}
	want := label(rec.Release)
	if rj := as.Rejected; rj != nil && (rj.Number == rec.Release || (rj.Number == 0 && rj.SHA256 == rec.SHA256)) {
		return false, "release " + want + ": " + failureText(as, "rejected by the agent")
	}
	if as.Number != rec.Release && (as.Number != 0 || as.SHA256 != rec.SHA256) {
		return false, ""
	}
	switch as.State {
	case ferry.AppFailed:
		return false, "release " + want + ": " + failureText(as, "failed")
	case ferry.AppRunning:
	default:
		return false, ""
	}
	for _, p := range as.Processes {
		if p.Health != ferry.Healthy {
			return false, ""
		}
	}
	return true, ""
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
			bad = append(bad, fmt.Sprintf("%s.%d is %s", p.Process, p.Instance, cmp.Or(string(p.Health), "unknown")))
		}
	}
	s := fmt.Sprintf(" (the host reports %s %s", cmp.Or(as.Label, as.Release), as.State)
	if len(bad) > 0 {
		s += ": " + strings.Join(bad, ", ")
	}
	return s + ")"
}
