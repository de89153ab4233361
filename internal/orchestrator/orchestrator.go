// Package orchestrator rolls releases out: the deployment state machine
// (running, waiting for promotion, succeeded, failed, rolled back), the
// health-gated batches, the verdict on each host's report (Verdict, a pure
// function), the automatic rollback, the deploy lock of each app × group,
// and the leadership that makes one server of several drive the rollouts.
// It keeps all of its state in the repository, so a server that starts
// (or a new leader) adopts the rollouts another left running.
//
// The HTTP layer (package server) decides what to deploy and who may; it
// calls Launch, Promote and the lock methods.
package orchestrator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"sync"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/internal/repo"
	"github.com/ferrydeploy/ferry/internal/state"
)

// Log keys.
const (
	logApp        = "app"
	logGroup      = "group"
	logDeployment = "deployment"
	logErr        = "err"
)

// DefaultHostLostAfter is how long a host may go without a report before
// a rollout counts it lost, when Config leaves it 0.
const DefaultHostLostAfter = 30 * time.Second

// Config configures an Orchestrator. Repo is required.
type Config struct {
	Repo   *repo.Repo
	Logger *slog.Logger // default: discard
	// HostLostAfter fails a rollout's host that has not reported for this
	// long (default DefaultHostLostAfter).
	HostLostAfter time.Duration
	// Leader elects the one server that drives rollouts when several share
	// the state; nil means this one always leads.
	Leader Leader
	// Heard is when this server last received a report from host, which
	// may be later than the stored one (a slow store does not make a
	// host lost); nil: only stored reports count.
	Heard func(host string) (time.Time, bool)
	// Audit records what the orchestrator does by itself (a deployment's
	// end); nil records nothing.
	Audit func(ctx context.Context, ev api.AuditEvent)
	// Retention bounds the deployments and audit events kept.
	Retention Retention
}

// Orchestrator drives deployments.
type Orchestrator struct {
	cfg  Config
	log  *slog.Logger
	repo *repo.Repo
	st   state.Store // the repository's, for the locks' leases and watches

	mu       sync.Mutex
	leadCtx  context.Context   // while this server leads; nil otherwise
	running  map[string]bool   // deployments with a live rollout goroutine
	adopting map[string]bool   // deployments whose lock is being taken over
	letGo    map[string]func() // releases a live rollout's lock, by deployment
	wg       sync.WaitGroup
}

// New returns an orchestrator; it drives nothing until Run.
func New(cfg Config) *Orchestrator {
	if cfg.HostLostAfter <= 0 {
		cfg.HostLostAfter = DefaultHostLostAfter
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Heard == nil {
		cfg.Heard = func(string) (time.Time, bool) { return time.Time{}, false }
	}
	cfg.Retention = cfg.Retention.withDefaults()
	if cfg.Audit == nil {
		cfg.Audit = func(context.Context, api.AuditEvent) {}
	}
	return &Orchestrator{
		cfg: cfg, log: cfg.Logger, repo: cfg.Repo, st: cfg.Repo.Store(),
		running: map[string]bool{}, adopting: map[string]bool{}, letGo: map[string]func(){},
	}
}

// Run drives rollouts while this server leads, until ctx ends; then it
// waits for its rollouts to stop. They stay running in the state, for the
// next leader to resume.
func (o *Orchestrator) Run(ctx context.Context) {
	o.orchestrate(ctx)
	o.wg.Wait()
}

// audit records ev as the server's own doing.
func (o *Orchestrator) audit(ctx context.Context, ev api.AuditEvent) {
	o.cfg.Audit(ctx, ev)
}

// Launch takes the lock of d's app × group (waiting up to waitLock for
// its holder), records the deployment of d's release to hosts by who and
// starts its rollout. d has its plan checked (CheckPlan); Launch gives it
// its id, batches and the release the group runs now.
func (o *Orchestrator) Launch(ctx context.Context, d repo.Deployment, hosts []string, who string, waitLock time.Duration, reason string) (api.Deployment, error) {
	d.ID, d.By, d.State = newDeployID(), who, ferry.DeployRunning
	l, err := o.acquireLock(ctx, repo.Lock{Lock: api.Lock{App: d.App, Group: d.Group, Owner: who, Reason: reason, Since: time.Now().UTC()}, Deployment: d.ID}, waitLock)
	if err != nil {
		return api.Deployment{}, err
	}
	g, _, err := o.repo.GroupRelease(ctx, d.App, d.Group)
	if err != nil {
		o.release(ctx, l)
		return api.Deployment{}, err
	}
	d.From, d.Started = g.Release, time.Now().UTC()
	plan(&d.Deployment, hosts)
	if err := o.repo.CreateDeployment(ctx, d); err != nil {
		o.release(ctx, l)
		return api.Deployment{}, err
	}
	o.setOutcome(ctx, d.App, d.Release, ferry.OutcomeDeploying)
	o.start(d.ID, l)
	return d.Deployment, nil
}

// Promote lets canary deployment id go on past its canary batch. allowed
// checks the caller may touch the deployment's app × group.
func (o *Orchestrator) Promote(ctx context.Context, id string, allowed func(app, group string) error) (repo.Deployment, error) {
	return o.repo.UpdateDeployment(ctx, id, func(d *repo.Deployment) error {
		if err := allowed(d.App, d.Group); err != nil {
			return err
		}
		switch {
		case d.Strategy != api.StrategyCanary:
			return ferry.Errorf(ferry.EINVALID, "deployment %s is %s, not canary: nothing to promote", id, d.Strategy)
		case d.State != ferry.DeployRunning && d.State != ferry.DeployWaiting:
			return ferry.Errorf(ferry.EINVALID, "deployment %s is %s: nothing to promote", id, d.State)
		case d.Promoted:
			return repo.ErrSkip
		}
		d.Promoted = true
		return nil
	})
}

// setOutcome records the outcome of a release's last deployment.
func (o *Orchestrator) setOutcome(ctx context.Context, app string, n int, outcome ferry.Outcome) {
	if n == 0 {
		return
	}
	_, err := o.repo.UpdateRelease(ctx, app, n, func(r *api.Release, exists bool) error {
		if !exists || r.Outcome == outcome {
			return repo.ErrSkip
		}
		r.Outcome = outcome
		return nil
	})
	if err != nil {
		o.log.Warn("release outcome", logApp, app, "release", n, logErr, err)
	}
}

func newDeployID() string {
	b := make([]byte, 3)
	rand.Read(b)
	return "d" + time.Now().UTC().Format("20060102T150405") + "-" + hex.EncodeToString(b)
}

func label(n int) string { return ferry.FormatRelease(n) }
