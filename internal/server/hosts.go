package server

import (
	"net/http"
	"strings"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
)

// removeHost forgets a host: its record, credential, desired state and
// last report. Its agent is refused from then on, rollouts stop waiting
// for it, and its name is free for a new join. What runs on the machine
// keeps running until someone stops its agent.
func (s *Server) removeHost(w http.ResponseWriter, r *http.Request, p *principal) error {
	ctx := r.Context()
	name := r.PathValue("name")
	h, _, err := s.repo.Host(ctx, name)
	if ferry.ErrorCode(err) == ferry.ENOTFOUND {
		return ferry.Errorf(ferry.ENOTFOUND, "no host %s (ferry status lists the hosts)", name)
	}
	if err != nil {
		return err
	}
	if !p.coversApp("") {
		return ferry.Errorf(ferry.EDENIED, "token %s may touch only the apps %s; host %s runs every app of its groups: removing it needs a token scoped to all apps", p.Name, strings.Join(p.Apps, ", "), name)
	}
	for _, g := range h.Groups {
		if !p.coversGroup(g) {
			return ferry.Errorf(ferry.EDENIED, "host %s is in %s; token %s may touch only %s", name, strings.Join(h.Groups, ", "), p.Name, strings.Join(p.Groups, ", "))
		}
	}
	// The credential first: from then on nothing the agent sends counts.
	if h.TokenID != "" {
		if err := s.st.Delete(ctx, prefixTokens+h.TokenID); err != nil {
			return err
		}
	}
	if err := s.repo.ForgetHost(ctx, h); err != nil {
		return err
	}
	s.heard.Delete(name)
	s.auditReq(r, p, api.AuditEvent{Action: "host.rm", Target: "host/" + name, Detail: "groups " + strings.Join(h.Groups, ",")})
	w.WriteHeader(http.StatusNoContent)
	return nil
}
