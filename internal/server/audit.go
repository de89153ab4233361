package server

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
)

// audit records a change. A failure to record is logged, not returned:
// the change itself already happened.
func (s *Server) audit(ctx context.Context, p *principal, ev api.AuditEvent) {
	ev.Who = "server" // a change the server made itself: a rollout's outcome, the first admin token
	if p != nil {
		ev.Who = p.who()
	}
	ev.Time = time.Now().UTC()
	if p != nil {
		ev.From = p.remote
	}
	if ev.From == "" {
		ev.From = "server"
	}
	if err := s.repo.AppendAudit(context.WithoutCancel(ctx), ev); err != nil {
		s.log.Error("audit", "action", ev.Action, "target", ev.Target, logErr, err)
	}
}

// auditReq is audit for a change made by request r.
func (s *Server) auditReq(r *http.Request, p *principal, ev api.AuditEvent) {
	if p == nil {
		p = &principal{}
		p.Name = "anonymous"
	}
	q := *p
	q.remote = r.RemoteAddr
	s.audit(r.Context(), &q, ev)
}

// listAudit answers the newest events, oldest first: ?limit=N (default
// 100; 0 means all), only those of ?app=, ?group= and ?who= when given,
// and only those within the caller's scope: a token scoped to some apps
// or groups sees the events of those, not the server-wide ones (tokens,
// hosts joining) that name no app or no group.
func (s *Server) listAudit(w http.ResponseWriter, r *http.Request, p *principal) error {
	q := r.URL.Query()
	limit := 100
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return ferry.Errorf(ferry.EINVALID, "limit %q: want a number of events, 0 for all", v)
		}
		limit = n
	}
	app, group, who := q.Get("app"), q.Get("group"), q.Get("who")
	evs, err := s.repo.Audit(r.Context(), func(e api.AuditEvent) bool {
		return (app == "" || e.App == app) && (group == "" || e.Group == group) && (who == "" || e.Who == who) && p.allowed(e.App, e.Group)
	}, limit)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, evs)
}
