package server

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
)

// gc removes the artifacts no release references, except each app's
// req.Keep newest and any uploaded within req.MinAge (a publish whose
// deploy has not made its release yet). Every release keeps its artifact,
// so a rollback always finds it. The blob goes before its record: a crash
// between them leaves a record a new publish fills again, never bytes no
// record names.
func (s *Server) gc(w http.ResponseWriter, r *http.Request, p *principal) error {
	ctx := r.Context()
	var req api.GCRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if req.Keep < 0 || req.MinAge < 0 {
		return ferry.Errorf(ferry.EINVALID, "gc: keep and min_age cannot be negative")
	}
	if !p.coversGroup("") {
		// An app's artifacts serve every group it runs in.
		return ferry.Errorf(ferry.EDENIED, "token %s may touch only the groups %s; gc removes artifacts every group shares and needs a token scoped to all groups", p.Name, strings.Join(p.Groups, ", "))
	}
	cands, kept, err := s.gcCandidates(ctx, req, time.Now(), p.coversApp)
	if err != nil {
		return err
	}
	res := api.GCResult{Removed: []api.Artifact{}, Kept: kept, DryRun: req.DryRun}
	if !req.DryRun && len(cands) > 0 {
		// A release made since the candidates were chosen keeps its
		// artifact: look again just before deleting.
		refs, err := s.releasedArtifacts(ctx)
		if err != nil {
			return err
		}
		for _, a := range cands {
			if refs[a.SHA256] {
				res.Kept++
				continue
			}
			if err := s.removeArtifact(ctx, a); err != nil {
				if res.Failed == nil {
					res.Failed = map[string]string{}
				}
				res.Failed[a.SHA256] = err.Error()
				continue
			}
			res.Removed = append(res.Removed, a)
			res.Freed += a.Size
		}
	} else {
		res.Removed = append(res.Removed, cands...)
		for _, a := range cands {
			res.Freed += a.Size
		}
	}
	if !req.DryRun {
		s.auditReq(r, p, api.AuditEvent{Action: "gc", Target: "artifacts", Detail: fmt.Sprintf("removed %d (%d bytes), keep %d, min age %s", len(res.Removed), res.Freed, req.Keep, req.MinAge)})
	}
	return writeJSON(w, http.StatusOK, res)
}

// gcCandidates are the artifacts gc may remove, oldest first, and how many
// it keeps, among those of the apps app accepts (the caller's scope).
func (s *Server) gcCandidates(ctx context.Context, req api.GCRequest, now time.Time, app func(string) bool) ([]api.Artifact, int, error) {
	recs, err := s.repo.Artifacts(ctx)
	if err != nil {
		return nil, 0, err
	}
	var arts []api.Artifact
	for _, a := range recs {
		if app(a.App) {
			arts = append(arts, a.Artifact)
		}
	}
	refs, err := s.releasedArtifacts(ctx)
	if err != nil {
		return nil, 0, err
	}
	// Newest first within each app, so the first Keep are the kept ones.
	slices.SortFunc(arts, func(a, b api.Artifact) int {
		return cmp.Or(cmp.Compare(a.App, b.App), b.Uploaded.Compare(a.Uploaded), cmp.Compare(a.SHA256, b.SHA256))
	})
	var cands []api.Artifact
	nth := map[string]int{}
	for _, a := range arts {
		nth[a.App]++
		if refs[a.SHA256] || nth[a.App] <= req.Keep || now.Sub(a.Uploaded) < req.MinAge {
			continue
		}
		cands = append(cands, a)
	}
	slices.SortFunc(cands, func(a, b api.Artifact) int { return a.Uploaded.Compare(b.Uploaded) })
	return cands, len(arts) - len(cands), nil
}

// releasedArtifacts is the set of artifact digests some release names.
func (s *Server) releasedArtifacts(ctx context.Context) (map[string]bool, error) {
	rels, err := s.repo.Releases(ctx, "")
	if err != nil {
		return nil, err
	}
	refs := make(map[string]bool, len(rels))
	for _, r := range rels {
		refs[r.SHA256] = true
	}
	return refs, nil
}

// removeArtifact deletes an artifact's bytes, then its record.
func (s *Server) removeArtifact(ctx context.Context, a api.Artifact) error {
	key, _, err := s.blobKey(ctx, a.App, a.SHA256)
	if err == nil {
		err = s.blobs.Delete(ctx, key)
	}
	if err != nil && ferry.ErrorCode(err) != ferry.ENOTFOUND {
		return err
	}
	return s.repo.DeleteArtifact(ctx, a.SHA256)
}
