package server

import (
	"context"
	"net/http"
	"slices"
	"strconv"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/internal/repo"
	"github.com/ferrydeploy/ferry/internal/signature"
)

// makeRelease makes (or finds) the release a deploy with the same
// selectors would, without deploying it, so that it can be signed first.
func (s *Server) makeRelease(w http.ResponseWriter, r *http.Request, p *principal) error {
	app := r.PathValue("app")
	var req api.ReleaseRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	// A release belongs to the app; making one deploys nothing.
	check := p.scopeApp(app)
	if req.Group != "" {
		check = p.scope(app, req.Group)
	}
	if check != nil {
		return check
	}
	rel, err := s.resolveRelease(r.Context(), p, api.DeployRequest{App: app, Group: req.Group, Version: req.Version, SHA256: req.SHA256}, nil)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, rel)
}

// addSignature attaches a signature to a release record, refusing one that
// does not verify against the record with its own key: a bad signature is
// a mistake to report now, not on every host later.
func (s *Server) addSignature(w http.ResponseWriter, r *http.Request, p *principal) error {
	app := r.PathValue("app")
	n, err := strconv.Atoi(r.PathValue("n"))
	if err != nil || n <= 0 {
		return ferry.Errorf(ferry.EINVALID, "release %q: a release number", r.PathValue("n"))
	}
	if err := p.scopeApp(app); err != nil {
		return err
	}
	var sig signature.Signature
	if err := decode(r, &sig); err != nil {
		return err
	}
	rel, err := s.repo.UpdateRelease(r.Context(), app, n, func(rel *api.Release, exists bool) error {
		if !exists {
			return ferry.Errorf(ferry.ENOTFOUND, "app %s has no release %s", app, label(n))
		}
		if !sig.Valid(signature.ReleaseMessage(rel.App, rel.Number, rel.SHA256, rel.ConfigRev)) {
			return ferry.Errorf(ferry.EINVALID, "the signature does not verify against release %s of %s (signed another record, or with another key than the one given)", label(n), app)
		}
		if slices.ContainsFunc(rel.Signatures, func(x signature.Signature) bool { return x.Key == sig.Key }) {
			return errSkip
		}
		rel.Signatures = append(rel.Signatures, sig)
		return nil
	})
	if err != nil {
		return err
	}
	if err := s.resign(r.Context(), app, rel); err != nil {
		return err
	}
	s.auditReq(r, p, api.AuditEvent{Action: "release.sign", Target: "release/" + app + "/" + label(n), Detail: "key " + signature.KeyID(sig.Key), App: app})
	return writeJSON(w, http.StatusOK, rel)
}

// resign changes the desired entry of every host that wants rel, so
// their blocking queries answer with its new signatures: an agent that
// refused the release unsigned runs it once it is signed.
func (s *Server) resign(ctx context.Context, app string, rel api.Release) error {
	all, err := s.repo.AllDesired(ctx)
	if err != nil {
		return err
	}
	for host, d := range all {
		if e, ok := d.Apps[app]; !ok || e.Release != rel.Number || e.Signatures == len(rel.Signatures) {
			continue
		}
		err := s.repo.UpdateDesired(ctx, host, func(d *repo.Desired) bool {
			e, ok := d.Apps[app]
			if !ok || e.Release != rel.Number {
				return false
			}
			e.Signatures = len(rel.Signatures)
			d.Apps[app] = e
			return true
		})
		if err != nil {
			return err
		}
	}
	return nil
}
