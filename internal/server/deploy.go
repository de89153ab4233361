package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/internal/repo"
	"github.com/ferrydeploy/ferry/internal/spec"
)

// Deployment defaults.
const (
	defaultBatch         = "25%"
	defaultHealthTimeout = 60 * time.Second
)

func newDeployID() string {
	return "d" + time.Now().UTC().Format("20060102T150405") + "-" + randomHex(3)
}

// deploy makes or selects a release and starts rolling it out.
func (s *Server) deploy(w http.ResponseWriter, r *http.Request, p *principal) error {
	ctx := r.Context()
	var req api.DeployRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if req.App == "" || req.Group == "" {
		return ferry.Errorf(ferry.EINVALID, "app and group are required")
	}
	if err := p.scope(req.App, req.Group); err != nil {
		return err
	}
	rec := repo.Deployment{Deployment: api.Deployment{
		App: req.App, Group: req.Group, Strategy: req.Strategy, Batch: req.Batch, Canary: req.Canary,
		HealthTimeout: req.HealthTimeout, AutoRollback: !req.NoAutoRollback,
	}}
	hosts, err := s.knownGroup(ctx, req.Group)
	if err != nil {
		return err
	}
	taken, err := s.otherGroups(ctx, req.App, req.Group, hosts)
	if err != nil {
		return err
	}
	for _, h := range slices.Sorted(maps.Keys(taken)) {
		return ferry.Errorf(ferry.EINVALID, "host %s runs %s through group %s: an app runs on a host through one group at a time. Deploy it to %s there, or undeploy it from %s first", h, req.App, taken[h], taken[h], taken[h])
	}
	if req.WaitLock <= 0 {
		// Refuse before a release is made for a deploy that cannot run.
		if held, ok, err := s.lockHeld(ctx, req.App, req.Group); err != nil {
			return err
		} else if ok {
			return ferry.Errorf(ferry.ELOCKED, "%s", lockMessage(held))
		}
	}
	rel, err := s.resolveRelease(ctx, p, req)
	if err != nil {
		return err
	}
	rec.Release, rec.SHA256 = rel.Number, rel.SHA256
	if err := s.appPolicy(ctx, &rec.Deployment, rel.SHA256); err != nil {
		return err
	}
	if err := checkPlan(&rec.Deployment); err != nil {
		return err
	}
	d, err := s.launch(ctx, p, rec, hosts, req.WaitLock, "deploy "+label(rel.Number))
	if err != nil {
		return err
	}
	s.auditReq(r, p, api.AuditEvent{Action: "deploy", Target: "deployment/" + d.ID, Detail: fmt.Sprintf("%s %s to %s (%s)", d.App, label(d.Release), d.Group, d.Strategy), App: d.App, Group: d.Group})
	return writeJSON(w, http.StatusCreated, d)
}

// checkPlan fills a deployment's defaults and checks its strategy.
func checkPlan(d *api.Deployment) error {
	if d.Strategy == "" {
		d.Strategy = api.StrategyRolling
	}
	if d.Batch == "" {
		d.Batch = defaultBatch
	}
	if d.HealthTimeout <= 0 {
		d.HealthTimeout = defaultHealthTimeout
	}
	switch d.Strategy {
	case api.StrategyAll, api.StrategyRolling:
	case api.StrategyCanary:
		if d.Canary <= 0 {
			d.Canary = 1
		}
	default:
		return ferry.Errorf(ferry.EINVALID, "strategy %q: use all, rolling or canary", d.Strategy)
	}
	_, err := batchSize(d.Batch, 1)
	return err
}

// batchSize is how many of n hosts a batch spec ("2", "25%") means: at
// least one.
func batchSize(spec string, n int) (int, error) {
	bad := ferry.Errorf(ferry.EINVALID, "batch %q: want a number of hosts (2) or a percentage (25%%)", spec)
	if pct, ok := strings.CutSuffix(spec, "%"); ok {
		v, err := strconv.Atoi(pct)
		if err != nil || v <= 0 || v > 100 {
			return 0, bad
		}
		return max(1, (n*v+99)/100), nil
	}
	v, err := strconv.Atoi(spec)
	if err != nil || v <= 0 {
		return 0, bad
	}
	return v, nil
}

// plan assigns hosts (sorted by name) to batches.
func plan(d *api.Deployment, hosts []string) {
	d.Hosts = map[string]api.HostRollout{}
	size, _ := batchSize(d.Batch, len(hosts))
	rest, first := hosts, 0
	if d.Strategy == api.StrategyCanary {
		c := min(d.Canary, len(hosts))
		for _, h := range hosts[:c] {
			d.Hosts[h] = api.HostRollout{Batch: 0, State: "pending"}
		}
		rest, first = hosts[c:], 1
	}
	if d.Strategy == api.StrategyAll {
		size = max(len(rest), 1)
	}
	for i, h := range rest {
		d.Hosts[h] = api.HostRollout{Batch: first + i/size, State: "pending"}
	}
}

// knownGroup returns the hosts of a group that hosts joined or a join
// token names; any other group is ENOTFOUND.
func (s *Server) knownGroup(ctx context.Context, group string) ([]string, error) {
	hosts, err := s.repo.GroupHosts(ctx, group)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(hosts))
	for i, h := range hosts {
		names[i] = h.Name
	}
	if len(names) > 0 {
		return names, nil
	}
	toks, err := listJSON[tokenRecord](ctx, s.st, prefixTokens)
	if err != nil {
		return nil, err
	}
	if !slices.ContainsFunc(toks, func(t tokenRecord) bool { return t.Role == roleJoin && slices.Contains(t.Groups, group) }) {
		return nil, ferry.Errorf(ferry.ENOTFOUND, "no group %s: no host joined it and no join token names it", group)
	}
	return names, nil
}

// resolveRelease finds the release a deploy asks for, making vN for an
// artifact that has no release yet.
func (s *Server) resolveRelease(ctx context.Context, p *principal, req api.DeployRequest) (api.Release, error) {
	var rel api.Release
	if req.Release > 0 {
		rel, found, err := s.repo.Release(ctx, req.App, req.Release)
		if err != nil {
			return rel, err
		}
		if !found {
			return rel, ferry.Errorf(ferry.ENOTFOUND, "app %s has no release %s", req.App, label(req.Release))
		}
		return rel, s.checkBlob(ctx, rel)
	}
	recs, err := s.repo.Artifacts(ctx)
	if err != nil {
		return rel, err
	}
	want := req.SHA256
	if want == "" && req.Version == "" {
		// No version: the artifact the group runs, with the newest config
		// (a config change deploys like code); the newest artifact for a
		// group that runs none yet.
		g, _, err := s.repo.GroupRelease(ctx, req.App, req.Group)
		if err != nil {
			return rel, err
		}
		want = g.SHA256
	}
	var arts []api.Artifact
	for _, a := range recs {
		if a.App == req.App && (want == "" || a.SHA256 == want) && (req.Version == "" || a.Version == req.Version) {
			arts = append(arts, a.Artifact)
		}
	}
	if len(arts) == 0 {
		switch {
		case req.SHA256 != "":
			return rel, ferry.Errorf(ferry.ENOTFOUND, "app %s has no artifact sha256 %s: ferry publish it first", req.App, req.SHA256)
		case req.Version != "":
			return rel, ferry.Errorf(ferry.ENOTFOUND, "app %s has no artifact version %s: ferry publish it first", req.App, req.Version)
		}
		return rel, ferry.Errorf(ferry.ENOTFOUND, "no app %s: ferry publish an artifact of it first", req.App)
	}
	art := slices.MaxFunc(arts, func(a, b api.Artifact) int { return a.Uploaded.Compare(b.Uploaded) })
	configRev, err := s.configHeadRev(ctx, req.App)
	if err != nil {
		return rel, err
	}
	for {
		rels, err := s.repo.Releases(ctx, req.App)
		if err != nil {
			return rel, err
		}
		if i := slices.IndexFunc(rels, func(r api.Release) bool { return r.SHA256 == art.SHA256 && r.ConfigRev == configRev }); i >= 0 {
			return rels[i], s.checkBlob(ctx, rels[i])
		}
		rel = api.Release{App: req.App, Number: len(rels) + 1, SHA256: art.SHA256, Version: art.Version, ConfigRev: configRev, Created: time.Now().UTC(), By: p.who()}
		if len(rels) > 0 {
			rel.Number = rels[len(rels)-1].Number + 1
		}
		if err := s.checkBlob(ctx, rel); err != nil {
			return rel, err
		}
		ok, err := s.repo.CreateRelease(ctx, rel)
		if err != nil || ok {
			return rel, err
		}
	}
}

// checkBlob fails when a release's artifact is not in the store.
func (s *Server) checkBlob(ctx context.Context, rel api.Release) error {
	_, _, err := s.blobKey(ctx, rel.App, rel.SHA256)
	if ferry.ErrorCode(err) == ferry.ENOTFOUND {
		return ferry.Errorf(ferry.ENOTFOUND, "release %s of %s: its artifact %s is missing from the store; publish it again", label(rel.Number), rel.App, rel.SHA256)
	}
	return err
}

// launch takes the lock, records the deployment and starts its rollout.
func (s *Server) launch(ctx context.Context, p *principal, rec repo.Deployment, hosts []string, waitLock time.Duration, reason string) (api.Deployment, error) {
	rec.ID, rec.By, rec.State = newDeployID(), p.who(), api.DeployRunning
	l, err := s.acquireLock(ctx, repo.Lock{Lock: api.Lock{App: rec.App, Group: rec.Group, Owner: p.who(), Reason: reason, Since: time.Now().UTC()}, Deployment: rec.ID}, waitLock)
	if err != nil {
		return api.Deployment{}, err
	}
	g, _, err := s.repo.GroupRelease(ctx, rec.App, rec.Group)
	if err != nil {
		s.release(ctx, l)
		return api.Deployment{}, err
	}
	rec.From, rec.Started = g.Release, time.Now().UTC()
	plan(&rec.Deployment, hosts)
	if err := s.repo.CreateDeployment(ctx, rec); err != nil {
		s.release(ctx, l)
		return api.Deployment{}, err
	}
	s.setOutcome(ctx, rec.App, rec.Release, "deploying")
	s.start(rec.ID, l)
	return rec.Deployment, nil
}

// setOutcome records the outcome of a release's last deployment.
func (s *Server) setOutcome(ctx context.Context, app string, n int, outcome string) {
	if n == 0 {
		return
	}
	_, err := s.repo.UpdateRelease(ctx, app, n, func(r *api.Release, exists bool) error {
		if !exists || r.Outcome == outcome {
			return errSkip
		}
		r.Outcome = outcome
		return nil
	})
	if err != nil {
		s.log.Warn("release outcome", logApp, app, "release", n, logErr, err)
	}
}

// appPolicy fills what the request left out from the `deploy:` section of
// the release's ferry.yaml: the app's own defaults come before the server's.
// The policy was taken from the artifact when it was published.
func (s *Server) appPolicy(ctx context.Context, d *api.Deployment, sha256 string) error {
	pol, err := s.deployPolicy(ctx, d.App, sha256)
	if err != nil {
		return err
	}
	switch {
	case pol.NoSpec:
		return nil // an artifact without ferry.yaml deploys with the server's defaults
	case pol.Invalid != "":
		return ferry.WrapError(ferry.EINVALID, errors.New(pol.Invalid), "%s of release %s", spec.FileName, label(d.Release))
	}
	d.Strategy = cmp.Or(d.Strategy, pol.Strategy)
	d.Batch = cmp.Or(d.Batch, pol.Batch)
	if d.Canary == 0 {
		d.Canary = pol.Canary
	}
	if d.HealthTimeout <= 0 {
		d.HealthTimeout = pol.HealthTimeout
	}
	d.AutoRollback = d.AutoRollback && pol.AutoRollback
	return nil
}
