package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/internal/orchestrator"
	"github.com/ferrydeploy/ferry/internal/repo"
	"github.com/ferrydeploy/ferry/internal/spec"
)

// The server's deployment defaults, for what neither the request nor the
// app's ferry.yaml says.
const (
	defaultBatch         = orchestrator.DefaultBatch
	defaultHealthTimeout = orchestrator.DefaultHealthTimeout
)

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
		if held, ok, err := s.orch.LockHeld(ctx, req.App, req.Group); err != nil {
			return err
		} else if ok {
			return orchestrator.LockedError(held)
		}
	}
	targets, err := s.hostTargets(ctx, hosts)
	if err != nil {
		return err
	}
	rel, err := s.resolveRelease(ctx, p, req, targets)
	if err != nil {
		return err
	}
	rec.Release, rec.SHA256 = rel.Number, rel.SHA256
	if err := s.appPolicy(ctx, &rec.Deployment, rel.SHA256); err != nil {
		return err
	}
	if err := orchestrator.CheckPlan(&rec.Deployment); err != nil {
		return err
	}
	d, err := s.orch.Launch(ctx, rec, hosts, p.who(), req.WaitLock, "deploy "+label(rel.Number))
	if err != nil {
		return err
	}
	s.auditReq(r, p, api.AuditEvent{Action: "deploy", Target: "deployment/" + d.ID, Detail: fmt.Sprintf("%s %s to %s (%s)", d.App, label(d.Release), d.Group, d.Strategy), App: d.App, Group: d.Group})
	return writeJSON(w, http.StatusCreated, d)
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
// Among artifacts of one version, the one built for what the hosts of
// targets run is chosen, and one built for another os/arch than a host
// runs is refused before a release is made (targets: host → os/arch; nil
// checks nothing).
func (s *Server) resolveRelease(ctx context.Context, p *principal, req api.DeployRequest, targets map[string]string) (api.Release, error) {
	var rel api.Release
	if req.Release > 0 {
		rel, found, err := s.repo.Release(ctx, req.App, req.Release)
		if err != nil {
			return rel, err
		}
		if !found {
			return rel, ferry.Errorf(ferry.ENOTFOUND, "app %s has no release %s", req.App, label(req.Release))
		}
		a, found, err := s.repo.Artifact(ctx, rel.SHA256)
		if err != nil {
			return rel, err
		}
		if found {
			if err := checkTargets(a.Artifact, targets); err != nil {
				return rel, err
			}
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
	target := soleTarget(targets)
	if matching := slices.DeleteFunc(slices.Clone(arts), func(a api.Artifact) bool { return !builtFor(a, target) }); len(matching) > 0 {
		arts = matching
	}
	art := slices.MaxFunc(arts, func(a, b api.Artifact) int { return a.Uploaded.Compare(b.Uploaded) })
	if err := checkTargets(art, targets); err != nil {
		return rel, err
	}
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

// hostTargets maps each host that has reported to the os/arch its agent
// runs on ("linux/amd64").
func (s *Server) hostTargets(ctx context.Context, hosts []string) (map[string]string, error) {
	reps, _, err := s.repo.HostReports(ctx, hosts)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for h, rr := range reps {
		if rr.State.OS != "" {
			out[h] = rr.State.OS + "/" + rr.State.Arch
		}
	}
	return out, nil
}

// soleTarget is the os/arch every host of targets runs, "" when they
// differ or none is known.
func soleTarget(targets map[string]string) string {
	one := ""
	for _, t := range targets {
		if one != "" && t != one {
			return ""
		}
		one = t
	}
	return one
}

// builtFor reports whether a was built for target; an artifact that says
// nothing (an older build) and an empty target match anything.
func builtFor(a api.Artifact, target string) bool {
	return target == "" || a.OS == "" || a.OS+"/"+a.Arch == target
}

// checkTargets refuses, before anything moves, a release whose artifact
// was built for another os/arch than one of the hosts runs, naming them:
// the agent would stop the running instance to start a binary the kernel
// cannot execute.
func checkTargets(a api.Artifact, targets map[string]string) error {
	if a.OS == "" {
		return nil
	}
	built := a.OS + "/" + a.Arch
	var wrong []string
	for _, h := range slices.Sorted(maps.Keys(targets)) {
		if targets[h] != built {
			wrong = append(wrong, h+" ("+targets[h]+")")
		}
	}
	if len(wrong) == 0 {
		return nil
	}
	return ferry.Errorf(ferry.EINVALID, "%s %s (artifact %.12s) is built for %s, and %s run another: build it for them (ferry build --os OS --arch ARCH), publish it, and deploy its version; a group whose hosts differ needs a group per os/arch",
		a.App, a.Version, a.SHA256, built, strings.Join(wrong, ", "))
}
