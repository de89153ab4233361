package orchestrator

import (
	"context"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/repo"
)

// Leader decides which of several servers sharing one state drives the
// rollouts: exactly one at a time. Every server serves the API and agents;
// a deployment created on any of them is driven by the leader.
type Leader interface {
	// Lead blocks until this server leads, or ctx ends, and returns a
	// context that ends when it stops leading.
	Lead(ctx context.Context) (context.Context, error)
}

// orchestrate drives rollouts while this server leads: it resumes the
// deployments left running, then takes on each new one as its record
// appears; and it prunes the history (see Retention). Without a
// Config.Leader the server always leads.
func (o *Orchestrator) orchestrate(ctx context.Context) {
	for ctx.Err() == nil {
		lctx := ctx
		if o.cfg.Leader != nil {
			var err error
			if lctx, err = o.cfg.Leader.Lead(ctx); err != nil {
				if ctx.Err() == nil {
					o.log.Warn("campaign for leadership", logErr, err)
					sleep(ctx, time.Second)
				}
				continue
			}
			o.log.Info("leading: this server drives rollouts")
		}
		o.mu.Lock()
		o.leadCtx = lctx
		o.mu.Unlock()
		pctx, stopPruning := context.WithCancel(lctx)
		o.wg.Add(1)
		go func() {
			defer o.wg.Done()
			o.pruneLoop(pctx)
		}()
		o.lead(lctx)
		stopPruning()
		o.mu.Lock()
		o.leadCtx = nil
		o.mu.Unlock()
		if ctx.Err() == nil {
			o.log.Warn("no longer leading: another server drives rollouts")
		}
	}
}

// lead adopts running deployments until ctx ends: those listed now, then
// each one a watch reports, listing again whenever the watch breaks.
func (o *Orchestrator) lead(ctx context.Context) {
	for ctx.Err() == nil {
		rev, err := o.resume(ctx)
		if err != nil {
			if ctx.Err() == nil {
				o.log.Error("resume rollouts", logErr, err)
				sleep(ctx, time.Second)
			}
			continue
		}
		w, err := o.st.Watch(ctx, repo.PrefixDeploys, rev)
		if err != nil {
			sleep(ctx, time.Second)
			continue
		}
		for ev := range w.C {
			var rec repo.Deployment
			if ev.Type != "put" || repo.Unmarshal(ev.KV, &rec) != nil {
				continue
			}
			if runnable(rec) {
				o.adopt(ctx, rec)
			}
		}
	}
}

// runnable reports whether rec is a deployment the leader must drive.
// Automatic rollbacks are driven by their parent.
func runnable(rec repo.Deployment) bool {
	return !rec.Auto && (rec.State == ferry.DeployRunning || rec.State == ferry.DeployWaiting)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
