package server

import (
	"encoding/json"
	"net/http"

	"github.com/ferrydeploy/ferry/api"
)

func (s *Server) listLocks(w http.ResponseWriter, r *http.Request, p *principal) error {
	recs, err := s.orch.Locks(r.Context())
	if err != nil {
		return err
	}
	out := make([]api.Lock, 0, len(recs))
	for _, rec := range recs {
		if p.allowed(rec.App, rec.Group) {
			out = append(out, rec.Lock)
		}
	}
	return writeJSON(w, http.StatusOK, out)
}

// breakLock removes a lock; its rollout notices at its next renewal and
// stops, failed.
func (s *Server) breakLock(w http.ResponseWriter, r *http.Request, p *principal) error {
	app, group := r.PathValue("app"), r.PathValue("group")
	if err := p.scope(app, group); err != nil {
		return err
	}
	held, err := s.orch.BreakLock(r.Context(), app, group)
	if err != nil {
		return err
	}
	detail, _ := json.Marshal(held)
	s.auditReq(r, p, api.AuditEvent{Action: "lock.break", Target: "locks/" + app + "/" + group, Detail: string(detail), App: app, Group: group})
	w.WriteHeader(http.StatusNoContent)
	return nil
}
