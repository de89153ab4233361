package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/internal/orchestrator"
	"github.com/ferrydeploy/ferry/internal/repo"
)

// getDeployment answers a deployment; with ?index=N it blocks until the
// deployment changes past N (or ?wait= passes).
func (s *Server) getDeployment(w http.ResponseWriter, r *http.Request, p *principal) error {
	index, wait, err := blockingParams(r, 30*time.Second, 10*time.Minute)
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	if index == 0 {
		wait = 0
	}
	key, err := s.repo.DeploymentKey(r.Context(), id)
	if err != nil {
		return err
	}
	val, idx, err := s.waitKey(r.Context(), key, index, wait)
	if err != nil {
		return err
	}
	if val == nil {
		return ferry.Errorf(ferry.ENOTFOUND, "no deployment %s", id)
	}
	var rec repo.Deployment
	if err := json.Unmarshal(val, &rec); err != nil {
		return fmt.Errorf("state: deployment %s: %w", id, err)
	}
	if err := p.scope(rec.App, rec.Group); err != nil {
		return err
	}
	w.Header().Set(api.IndexHeader, fmt.Sprint(idx))
	return writeJSON(w, http.StatusOK, rec.Deployment)
}

// listDeployments answers deployments, oldest first: ?app=&group= narrow.
func (s *Server) listDeployments(w http.ResponseWriter, r *http.Request, p *principal) error {
	q := r.URL.Query()
	recs, err := s.repo.Deployments(r.Context(), q.Get("app"), q.Get("group"))
	if err != nil {
		return err
	}
	out := []api.Deployment{}
	for _, rec := range recs {
		if p.allowed(rec.App, rec.Group) {
			out = append(out, rec.Deployment)
		}
	}
	return writeJSON(w, http.StatusOK, out)
}

// promote lets a canary deployment go on past its canary batch.
func (s *Server) promote(w http.ResponseWriter, r *http.Request, p *principal) error {
	id := r.PathValue("id")
	rec, err := s.orch.Promote(r.Context(), id, p.scope)
	if err != nil {
		return err
	}
	s.auditReq(r, p, api.AuditEvent{Action: "promote", Target: "deployment/" + id, Detail: fmt.Sprintf("%s %s on %s", rec.App, label(rec.Release), rec.Group), App: rec.App, Group: rec.Group})
	return writeJSON(w, http.StatusOK, rec.Deployment)
}

// rollback rolls an app on a group back to a release: the one asked for,
// or the newest that was healthy on every host of the group and is not
// what the group runs now.
func (s *Server) rollback(w http.ResponseWriter, r *http.Request, p *principal) error {
	ctx := r.Context()
	var req api.RollbackRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if req.App == "" || req.Group == "" {
		return ferry.Errorf(ferry.EINVALID, "app and group are required")
	}
	if err := p.scope(req.App, req.Group); err != nil {
		return err
	}
	hosts, err := s.knownGroup(ctx, req.Group)
	if err != nil {
		return err
	}
	// A host that runs the app through another group is not this
	// group's to roll back.
	taken, err := s.otherGroups(ctx, req.App, req.Group, hosts)
	if err != nil {
		return err
	}
	hosts = slices.DeleteFunc(hosts, func(h string) bool { _, ok := taken[h]; return ok })
	recs, err := s.repo.Deployments(ctx, req.App, req.Group)
	if err != nil {
		return err
	}
	slices.Reverse(recs) // newest first
	g, _, err := s.repo.GroupRelease(ctx, req.App, req.Group)
	if err != nil {
		return err
	}
	target := req.Release
	if target == 0 {
		for _, d := range recs {
			if d.State == api.DeploySucceeded && d.Release != 0 && d.Release != g.Release {
				target = d.Release
				break
			}
		}
		if target == 0 {
			return ferry.Errorf(ferry.ENOTFOUND, "%s on %s: no earlier release was healthy on every host; name one with --release", req.App, req.Group)
		}
	}
	rel, err := s.resolveRelease(ctx, p, api.DeployRequest{App: req.App, Release: target}, nil)
	if err != nil {
		return err
	}
	rec := repo.Deployment{Deployment: api.Deployment{App: req.App, Group: req.Group, Release: rel.Number, AutoRollback: false}, SHA256: rel.SHA256}
	if len(recs) > 0 {
		rec.RollbackOf = recs[0].ID
	}
	if err := orchestrator.CheckPlan(&rec.Deployment); err != nil {
		return err
	}
	if req.DryRun {
		return writeJSON(w, http.StatusOK, api.Deployment{App: req.App, Group: req.Group, Release: rel.Number, From: g.Release})
	}
	d, err := s.orch.Launch(ctx, rec, hosts, p.who(), 0, "rollback to "+label(rel.Number))
	if err != nil {
		return err
	}
	s.auditReq(r, p, api.AuditEvent{Action: "rollback", Target: "deployment/" + d.ID, Detail: fmt.Sprintf("%s to %s on %s", d.App, label(d.Release), d.Group), App: d.App, Group: d.Group})
	return writeJSON(w, http.StatusCreated, d)
}
