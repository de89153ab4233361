package orchestrator

import (
	"context"
	"slices"
	"time"

	"github.com/ferrydeploy/ferry/internal/repo"
)

// Retention bounds the history the state keeps. A busy team (a few dozen
// deployments of each app × group a week, a few thousand audit events a
// day) keeps a year of it within the defaults.
type Retention struct {
	// Deployments is how many ended deployments of each app × group stay
	// (0: DefaultKeepDeployments; less than 0: no count limit).
	Deployments int
	// DeploymentsFor is how long an ended deployment stays (0:
	// DefaultKeepFor; less than 0: no age limit); the newest
	// MinKeepDeployments of each app × group stay however old, so a
	// rollback still finds the release before.
	DeploymentsFor time.Duration
	// AuditFor is how long an audit event stays (0: DefaultKeepFor; less
	// than 0: no age limit).
	AuditFor time.Duration
	// AuditEvents is how many audit events stay (0:
	// DefaultKeepAuditEvents; less than 0: no count limit).
	AuditEvents int
}

// Retention defaults.
const (
	DefaultKeepDeployments = 200
	DefaultKeepFor         = 400 * 24 * time.Hour
	DefaultKeepAuditEvents = 1_000_000
	MinKeepDeployments     = 10
	// pruneEvery is how often the leader prunes the whole history;
	// an app × group's deployments are also pruned as each one ends.
	pruneEvery = time.Hour
)

func (r Retention) withDefaults() Retention {
	def := func(v, d int) int {
		switch {
		case v == 0:
			return d
		case v < 0:
			return 0
		}
		return v
	}
	age := func(v time.Duration) time.Duration {
		switch {
		case v == 0:
			return DefaultKeepFor
		case v < 0:
			return 0
		}
		return v
	}
	return Retention{Deployments: def(r.Deployments, DefaultKeepDeployments), DeploymentsFor: age(r.DeploymentsFor),
		AuditFor: age(r.AuditFor), AuditEvents: def(r.AuditEvents, DefaultKeepAuditEvents)}
}

// expired picks, of one app × group's deployments (oldest first), the
// ended ones retention removes. A deployment still running or waiting
// for promotion is never removed, nor counted.
func (r Retention) expired(ds []repo.Deployment, now time.Time) []repo.Deployment {
	var out []repo.Deployment
	nth := 0 // how many ended deployments are newer
	for i := len(ds) - 1; i >= 0; i-- {
		d := ds[i]
		if !d.State.Ended() {
			continue
		}
		nth++
		ended := d.Ended
		if ended.IsZero() {
			ended = d.Started
		}
		tooMany := r.Deployments > 0 && nth > r.Deployments
		tooOld := r.DeploymentsFor > 0 && nth > MinKeepDeployments && now.Sub(ended) > r.DeploymentsFor
		if tooMany || tooOld {
			out = append(out, d)
		}
	}
	return out
}

// pruneDeployments removes what retention expires of app × group's
// deployments.
func (o *Orchestrator) pruneDeployments(ctx context.Context, app, group string, now time.Time) (int, error) {
	ds, err := o.repo.Deployments(ctx, app, group)
	if err != nil {
		return 0, err
	}
	return o.remove(ctx, o.cfg.Retention.expired(ds, now))
}

func (o *Orchestrator) remove(ctx context.Context, ds []repo.Deployment) (int, error) {
	for i, d := range ds {
		if err := o.repo.DeleteDeployment(ctx, d); err != nil {
			return i, err
		}
	}
	return len(ds), nil
}

// Prune removes the deployments and audit events retention expires, of
// every app × group.
func (o *Orchestrator) Prune(ctx context.Context, now time.Time) error {
	all, _, err := o.repo.AllDeployments(ctx)
	if err != nil {
		return err
	}
	byAppGroup := map[[2]string][]repo.Deployment{}
	for _, d := range all {
		k := [2]string{d.App, d.Group}
		byAppGroup[k] = append(byAppGroup[k], d)
	}
	removed := 0
	for _, ds := range byAppGroup {
		sortByStart(ds)
		n, err := o.remove(ctx, o.cfg.Retention.expired(ds, now))
		removed += n
		if err != nil {
			return err
		}
	}
	before := time.Time{}
	if o.cfg.Retention.AuditFor > 0 {
		before = now.Add(-o.cfg.Retention.AuditFor)
	}
	events, err := o.repo.PruneAudit(ctx, before, o.cfg.Retention.AuditEvents)
	if removed > 0 || events > 0 {
		o.log.Info("pruned history", "deployments", removed, "audit_events", events)
	}
	return err
}

func sortByStart(ds []repo.Deployment) {
	slices.SortStableFunc(ds, func(a, b repo.Deployment) int { return a.Started.Compare(b.Started) })
}

// pruneLoop prunes at once and then every pruneEvery, until ctx ends
// (this server stops leading).
func (o *Orchestrator) pruneLoop(ctx context.Context) {
	t := time.NewTicker(pruneEvery)
	defer t.Stop()
	for {
		if err := o.Prune(ctx, time.Now()); err != nil && ctx.Err() == nil {
			o.log.Warn("prune history", logErr, err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
