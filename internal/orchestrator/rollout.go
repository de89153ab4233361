package orchestrator

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/internal/repo"
)

// rolloutFailed is why a rollout stopped: one message per failed host.
type rolloutFailed struct{ msgs []string }

func (e *rolloutFailed) Error() string { return strings.Join(e.msgs, "; ") }

// start runs deployment id's rollout in the background, holding l.
func (o *Orchestrator) start(id string, l *lock) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.running[id] || o.leadCtx == nil {
		// Not leading: the leader adopts the deployment, taking over its
		// lock, as soon as it sees the record.
		return
	}
	o.running[id] = true
	ctx := o.leadCtx
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		defer func() {
			o.mu.Lock()
			delete(o.running, id)
			o.mu.Unlock()
		}()
		o.rollout(ctx, id, l)
	}()
}

// resume adopts every deployment left running (by a stopped server, or a
// leader that died) and returns the revision of the listing.
func (o *Orchestrator) resume(ctx context.Context) (int64, error) {
	recs, rev, err := o.repo.AllDeployments(ctx)
	if err != nil {
		return 0, err
	}
	for _, rec := range recs {
		if runnable(rec) {
			o.adopt(ctx, rec)
		}
	}
	return rev, nil
}

// adopt drives rec unless this server already does: it takes over the
// deployment's lock (still held by whoever created the deployment, or by a
// leader that died) and starts the rollout.
func (o *Orchestrator) adopt(ctx context.Context, rec repo.Deployment) {
	o.mu.Lock()
	if o.running[rec.ID] || o.adopting[rec.ID] {
		o.mu.Unlock()
		return
	}
	o.adopting[rec.ID] = true
	o.mu.Unlock()
	o.log.Info("adopting rollout", logDeployment, rec.ID, logApp, rec.App, logGroup, rec.Group)
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		defer func() {
			o.mu.Lock()
			delete(o.adopting, rec.ID)
			o.mu.Unlock()
		}()
		// A watch event may be older than the record: read it again
		// before taking the lock, and after, since a driver that just
		// finished it lets go of the lock before it records the end.
		stillRunnable := func() bool {
			cur, err := o.repo.Deployment(ctx, rec.ID)
			return err == nil && runnable(cur)
		}
		if !stillRunnable() {
			return
		}
		lr := repo.Lock{Lock: api.Lock{App: rec.App, Group: rec.Group, Owner: rec.By, Reason: "deploy " + label(rec.Release), Since: time.Now().UTC()}, Deployment: rec.ID}
		l, err := o.acquireLock(ctx, lr, lockTTL+5*time.Second)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			rec.Error = "could not resume: " + err.Error()
			o.finish(ctx, &rec, ferry.DeployFailed, ferry.OutcomeFailed)
			return
		}
		o.mu.Lock()
		running := o.running[rec.ID]
		o.mu.Unlock()
		if !running && !stillRunnable() {
			o.release(ctx, l)
			return
		}
		o.start(rec.ID, l) // marks it running before adopting is cleared
	}()
}

// rollout drives deployment id to its end and lets go of its lock. When
// ctx ends (the server stops) it leaves the deployment running, for the
// next server to resume.
func (o *Orchestrator) rollout(ctx context.Context, id string, l *lock) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	kctx, stopKeep := context.WithCancel(ctx)
	go o.keep(kctx, l, func() { cancel(errLockLost) })
	// finish lets go of the lock before it records the end, so whoever
	// sees the deployment ended can deploy again at once.
	var once sync.Once
	o.mu.Lock()
	o.letGo[id] = func() { once.Do(func() { stopKeep(); o.release(ctx, l) }) }
	o.mu.Unlock()
	defer func() {
		o.mu.Lock()
		delete(o.letGo, id)
		o.mu.Unlock()
	}()
	rec, err := o.repo.Deployment(ctx, id)
	if err != nil {
		o.log.Error("rollout", logDeployment, id, logErr, err)
		return
	}
	err = o.drive(ctx, &rec)
	if errors.Is(context.Cause(ctx), errLockLost) {
		fctx := context.WithoutCancel(ctx)
		rec.Error = errLockLost.Error()
		o.finish(fctx, &rec, ferry.DeployFailed, ferry.OutcomeFailed)
		return
	}
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		o.log.Error("rollout", logDeployment, id, logErr, err)
	}
	o.letGoOf(id)
}

// letGoOf releases the lock of deployment id's rollout, if it holds one.
func (o *Orchestrator) letGoOf(id string) {
	o.mu.Lock()
	f := o.letGo[id]
	o.mu.Unlock()
	if f != nil {
		f()
	}
}

// drive runs rec's batches and, when one fails and rec rolls back
// automatically, its rollback; it records the outcome.
func (o *Orchestrator) drive(ctx context.Context, rec *repo.Deployment) error {
	if rec.Child == "" {
		err := o.batches(ctx, rec)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var failed *rolloutFailed
		if !errors.As(err, &failed) {
			if err != nil {
				rec.Error = err.Error()
				return o.finish(ctx, rec, ferry.DeployFailed, ferry.OutcomeFailed)
			}
			return o.succeed(ctx, rec)
		}
		rec.Error = err.Error()
		o.log.Warn("rollout failed", logDeployment, rec.ID, logApp, rec.App, logGroup, rec.Group, logErr, err)
		if !rec.AutoRollback || rec.Auto {
			return o.finish(ctx, rec, ferry.DeployFailed, ferry.OutcomeFailed)
		}
		if err := o.startRollback(ctx, rec); err != nil {
			return err
		}
	}
	child, err := o.repo.Deployment(ctx, rec.Child)
	if err != nil {
		return err
	}
	if child.State == ferry.DeployRunning {
		if err := o.drive(ctx, &child); err != nil {
			return err
		}
	}
	if child.State != ferry.DeploySucceeded {
		rec.Error += "; rolling back failed: " + child.Error
		return o.finish(ctx, rec, ferry.DeployFailed, ferry.OutcomeFailed)
	}
	for h, hr := range rec.Hosts {
		if hr.State == ferry.HostHealthy || hr.State == ferry.HostDeploying {
			hr.State = ferry.HostRolledBack
			rec.Hosts[h] = hr
		}
	}
	return o.finish(ctx, rec, ferry.DeployRolledBack, ferry.OutcomeRolledBack)
}

// startRollback records the automatic rollback of rec: every host rec
// touched goes back to rec.From, in batches of the same size.
func (o *Orchestrator) startRollback(ctx context.Context, rec *repo.Deployment) error {
	child := repo.Deployment{Auto: true, Deployment: api.Deployment{
		ID: newDeployID(), App: rec.App, Group: rec.Group, Release: rec.From, From: rec.Release,
		Strategy: rec.Strategy, Batch: rec.Batch, HealthTimeout: rec.HealthTimeout,
		State: ferry.DeployRunning, RollbackOf: rec.ID, By: rec.By, Started: time.Now().UTC(),
	}}
	if child.Strategy == api.StrategyCanary {
		child.Strategy = api.StrategyRolling
	}
	if rec.From != 0 {
		rel, found, err := o.repo.Release(ctx, rec.App, rec.From)
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
		if hr.State != ferry.HostPending {
			touched = append(touched, h)
		}
	}
	slices.Sort(touched)
	plan(&child.Deployment, touched)
	if err := o.repo.CreateDeployment(ctx, child); err != nil {
		return err
	}
	rec.Child = child.ID
	return o.save(ctx, rec)
}

// batches rolls rec out batch by batch, skipping hosts already healthy
// (a resumed rollout), until done or a host fails.
func (o *Orchestrator) batches(ctx context.Context, rec *repo.Deployment) error {
	last := 0
	for _, hr := range rec.Hosts {
		last = max(last, hr.Batch)
	}
	target := repo.DesiredEntry{Release: rec.Release, SHA256: rec.SHA256, Group: rec.Group}
	for b := 0; b <= last; b++ {
		if rec.Strategy == api.StrategyCanary && b == 1 {
			if err := o.waitPromote(ctx, rec); err != nil {
				return err
			}
		}
		var hosts []string
		for _, h := range slices.Sorted(maps.Keys(rec.Hosts)) {
			if hr := rec.Hosts[h]; hr.Batch == b && hr.State != ferry.HostHealthy {
				hr.State = ferry.HostDeploying
				rec.Hosts[h] = hr
				hosts = append(hosts, h)
			}
		}
		if len(hosts) == 0 {
			continue
		}
		if err := o.save(ctx, rec); err != nil {
			return err
		}
		since := time.Now().UTC()
		if err := o.repo.SetDesiredMany(ctx, hosts, rec.App, target); err != nil {
			return err
		}
		if err := o.waitHealthy(ctx, rec, hosts, since); err != nil {
			return err
		}
	}
	return nil
}

// waitPromote parks a canary deployment until someone promotes it.
func (o *Orchestrator) waitPromote(ctx context.Context, rec *repo.Deployment) error {
	if rec.Promoted {
		return nil
	}
	rec.State = ferry.DeployWaiting
	if err := o.save(ctx, rec); err != nil {
		return err
	}
	key, err := o.repo.DeploymentKey(ctx, rec.ID)
	if err != nil {
		return err
	}
	var index int64
	for !rec.Promoted {
		val, idx, err := o.repo.Wait(ctx, key, index, time.Minute)
		if err != nil {
			return err
		}
		var cur repo.Deployment
		if err := unmarshalBytes(val, &cur); err != nil {
			return err
		}
		rec.Promoted, index = cur.Promoted, idx
	}
	rec.State = ferry.DeployRunning
	return o.save(ctx, rec)
}

// waitHealthy waits until every one of hosts reports rec's release
// running and healthy, or one fails: rejected by its agent, lost, or not
// healthy within the health timeout (see Verdict). Only reports received
// after since count, for success and failure alike.
func (o *Orchestrator) waitHealthy(ctx context.Context, rec *repo.Deployment, hosts []string, since time.Time) error {
	deadline := time.Now().Add(rec.HealthTimeout + verdictGrace(rec.HealthTimeout))
	known := map[string]repo.Host{}
	for _, name := range hosts {
		h, _, err := o.repo.Host(ctx, name)
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
			if rec.Hosts[h].State == ferry.HostDeploying {
				waiting = append(waiting, h)
			}
		}
		reps, rev, err := o.repo.HostReports(ctx, waiting)
		if err != nil {
			return err
		}
		if events == nil {
			events = o.nudges(wctx, repo.PrefixReports, rev)
		}
		var failed []string
		changed, now := false, time.Now()
		for _, h := range waiting {
			hr := rec.Hosts[h]
			rr, reported := reps[h]
			v := Verdict(Check{
				Release: rec.Release, SHA256: rec.SHA256, HealthTimeout: rec.HealthTimeout,
				BatchStart: since, Deadline: deadline, HostLostAfter: o.cfg.HostLostAfter,
				Reported: reported, ReportedAt: rr.LastSeen, App: rr.State.Apps[rec.App],
				LastSeen: o.lastSeen(known[h], rr, reported), Now: now,
			})
			switch v.State {
			case ferry.HostHealthy:
				hr.State = ferry.HostHealthy
			case ferry.HostFailed:
				hr.State, hr.Error, hr.Failure = ferry.HostFailed, v.Error, v.Failure
				failed = append(failed, h+": "+v.Error)
			default:
				continue
			}
			rec.Hosts[h], changed = hr, true
		}
		if changed {
			if err := o.save(ctx, rec); err != nil {
				return err
			}
		}
		if len(failed) > 0 {
			return &rolloutFailed{msgs: failed}
		}
		if !slices.ContainsFunc(waiting, func(h string) bool { return rec.Hosts[h].State == ferry.HostDeploying }) {
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

// lastSeen is when host h last reported, or joined if it never did: its
// stored report's time, or a later report this server received that is
// not stored yet (its store is slow; the host is not).
func (o *Orchestrator) lastSeen(h repo.Host, rr repo.Report, reported bool) time.Time {
	seen := h.Joined
	if reported && rr.LastSeen.After(seen) {
		seen = rr.LastSeen
	}
	if t, ok := o.cfg.Heard(h.Name); ok && t.After(seen) {
		seen = t
	}
	return seen
}

// nudges sends on its channel whenever a key under prefix changes after
// rev, and closes it when the watch ends.
func (o *Orchestrator) nudges(ctx context.Context, prefix string, rev int64) <-chan struct{} {
	c := make(chan struct{}, 1)
	w, err := o.repo.Store().Watch(ctx, prefix, rev)
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

// verdictGrace is how long past a batch's health timeout the server waits
// before it calls the batch failed: the agents measure the same timeout
// from a moment later (once their download is done), and their own
// verdict, which says why (the check's status and body, the crash), must
// come first when it can. 2 s and a tenth of the timeout, at most 10 s.
func verdictGrace(timeout time.Duration) time.Duration {
	return min(2*time.Second+timeout/10, 10*time.Second)
}
