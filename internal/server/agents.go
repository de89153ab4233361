package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/internal/desired"
	"github.com/ferrydeploy/ferry/internal/repo"
)

func label(n int) string { return ferry.FormatRelease(n) }

// doc renders a host's desired state for its agent: each release with the
// config it was made with, as its group sees it, secrets opened. Only this
// host's agent asks for it, over TLS.
func (s *Server) doc(ctx context.Context, d repo.Desired) (desired.Doc, error) {
	doc := desired.Doc{Apps: map[string]desired.App{}}
	for app, e := range d.Apps {
		a := desired.App{Artifact: s.url + "/v1/artifacts/" + e.SHA256, SHA256: e.SHA256, Release: label(e.Release), Number: e.Release, Group: e.Group}
		rel, found, err := s.repo.Release(ctx, app, e.Release)
		if err != nil {
			return doc, err
		}
		if !found {
			return doc, ferry.Errorf(ferry.ENOTFOUND, "desired state: app %s has no release %s", app, label(e.Release))
		}
		env, err := s.envFor(ctx, app, rel.ConfigRev, e.Group)
		if err != nil {
			return doc, err
		}
		a.Env, a.ConfigRev, a.Signatures = env, rel.ConfigRev, rel.Signatures
		doc.Apps[app] = a
	}
	return doc, nil
}

// join registers a host with a join token and answers its credential.
// A host's name is bound to its credential: a join under a name that is
// taken is refused, unless the caller proves it is that host (its own
// credential, when it joins again because its server's address changed)
// or the join token was made to replace exactly that host and covers all
// its groups (ferry agent join-token --replace). A host that so changes
// groups loses the entries of the groups it left; a join never hands out
// entries of a group its token does not cover.
func (s *Server) join(w http.ResponseWriter, r *http.Request, _ *principal) error {
	ctx := r.Context()
	var req api.JoinRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if err := ferry.CheckHostName(req.Name); err != nil {
		return fmt.Errorf("name: %w", err)
	}
	jt, err := s.checkToken(ctx, req.Token)
	if err != nil {
		return err
	}
	if jt.Role != roleJoin {
		return ferry.Errorf(ferry.EUNAUTH, "not a join token: make one with ferry agent join-token --group G")
	}
	old, oldRev, err := s.repo.Host(ctx, req.Name)
	if err != nil && ferry.ErrorCode(err) != ferry.ENOTFOUND {
		return err
	}
	exists := err == nil
	if exists {
		if err := s.mayRejoin(ctx, jt, old, req); err != nil {
			return err
		}
	}
	if err := s.useJoinToken(ctx, jt.ID); err != nil {
		return err
	}
	cred, err := s.newToken(ctx, api.Token{Name: "host:" + req.Name, Role: api.RoleAgent, Host: req.Name, Groups: jt.Groups})
	if err != nil {
		return err
	}
	h := repo.Host{Name: req.Name, Groups: jt.Groups, TokenID: cred.ID, Joined: time.Now().UTC()}
	// Written only if the record is still the one checked: two joins
	// under one new name cannot both win.
	if ok, err := s.repo.PutHost(ctx, h, oldRev); err != nil || !ok {
		s.st.Delete(context.WithoutCancel(ctx), prefixTokens+cred.ID)
		if err != nil {
			return err
		}
		return ferry.Errorf(ferry.EDENIED, "host %s joined meanwhile: the name is taken", h.Name)
	}
	if old.TokenID != "" {
		if err := s.st.Delete(ctx, prefixTokens+old.TokenID); err != nil {
			return err
		}
	}
	if err := s.leaveGroups(ctx, h); err != nil {
		return err
	}
	if err := s.converge(ctx, h); err != nil {
		return err
	}
	p := &principal{Token: jt.Token}
	detail := "groups " + strings.Join(h.Groups, ",")
	if exists {
		detail += fmt.Sprintf(" (was %s; the old credential is revoked)", strings.Join(old.Groups, ","))
	}
	s.auditReq(r, p, api.AuditEvent{Action: "host.join", Target: "host/" + h.Name, Detail: detail})
	return writeJSON(w, http.StatusOK, api.JoinResponse{Host: h.Name, Groups: h.Groups, Secret: cred.Secret})
}

// mayRejoin checks a join under the name of the existing host old.
func (s *Server) mayRejoin(ctx context.Context, jt tokenRecord, old repo.Host, req api.JoinRequest) error {
	if req.Credential != "" {
		rec, err := s.checkToken(ctx, req.Credential)
		if err == nil && rec.Role == api.RoleAgent && rec.Host == old.Name && rec.ID == old.TokenID {
			if !subset(old.Groups, jt.Groups) {
				return ferry.Errorf(ferry.EDENIED, "host %s is in %s; this join token covers only %s: join with a token for all of them", old.Name, strings.Join(old.Groups, ", "), strings.Join(jt.Groups, ", "))
			}
			return nil
		}
	}
	if jt.Replace != old.Name {
		return ferry.Errorf(ferry.EDENIED, "host %s has already joined: a join never takes over a host. If this machine replaces it, remove the old one first (ferry host rm %s) or make a join token for the replacement (ferry agent join-token --replace %s --group …); if it is another machine, give it another name (--name)", old.Name, old.Name, old.Name)
	}
	if !subset(old.Groups, jt.Groups) {
		return ferry.Errorf(ferry.EDENIED, "host %s is in %s; the join token that replaces it covers only %s", old.Name, strings.Join(old.Groups, ", "), strings.Join(jt.Groups, ", "))
	}
	return nil
}

// useJoinToken counts one join against token id's uses, refusing it when
// they are used up.
func (s *Server) useJoinToken(ctx context.Context, id string) error {
	_, err := update(ctx, s.st, prefixTokens+id, func(rec *tokenRecord, exists bool) error {
		if !exists || rec.Revoked {
			return ferry.Errorf(ferry.EUNAUTH, "join token was revoked")
		}
		if rec.Uses > 0 && rec.Used >= rec.Uses {
			return ferry.Errorf(ferry.EUNAUTH, "join token %s is used up (%d of %d hosts joined): make another with ferry agent join-token", rec.ID, rec.Used, rec.Uses)
		}
		rec.Used++
		return nil
	})
	return err
}

// leaveGroups removes from h's desired state the entries of groups h is
// no longer in: its agent stops those apps and forgets their config.
func (s *Server) leaveGroups(ctx context.Context, h repo.Host) error {
	return s.repo.UpdateDesired(ctx, h.Name, func(d *repo.Desired) bool {
		changed := false
		for app, e := range d.Apps {
			if !slices.Contains(h.Groups, e.Group) {
				delete(d.Apps, app)
				changed = true
			}
		}
		return changed
	})
}

// converge gives a host its groups' current releases, so a host that
// joins a group later runs what the group runs.
func (s *Server) converge(ctx context.Context, h repo.Host) error {
	grs, err := s.repo.GroupReleases(ctx)
	if err != nil {
		return err
	}
	for _, g := range grs {
		if !slices.Contains(h.Groups, g.Group) {
			continue
		}
		if _, err := s.repo.SetDesired(ctx, h.Name, g.App, repo.DesiredEntry{Release: g.Release, SHA256: g.SHA256, Group: g.Group}); err != nil {
			return err
		}
	}
	return nil
}

// desired answers an agent's blocking query for its desired state. The
// query ends with 401 when its credential does while it waits, and the
// credential is checked again right before the answer, which holds the
// host's secrets, goes out.
func (s *Server) desired(w http.ResponseWriter, r *http.Request, p *principal) error {
	index, wait, err := blockingParams(r, 5*time.Minute, 10*time.Minute)
	if err != nil {
		return err
	}
	ctx, release := s.revoker.hold(r.Context(), p)
	defer release()
	val, idx, synced := s.desiredMirror.wait(ctx, prefixDesired+p.Host, index, wait)
	if ctx.Err() != nil {
		return endedWhy(r, ctx)
	}
	if !synced {
		// The mirror lost its watch (the store is failing over): ask the
		// store itself, which says what is wrong if it cannot answer.
		if val, idx, err = s.waitKey(ctx, prefixDesired+p.Host, index, wait); err != nil {
			if ctx.Err() != nil {
				return endedWhy(r, ctx)
			}
			return err
		}
	}
	var d repo.Desired
	if val != nil {
		if err := json.Unmarshal(val, &d); err != nil {
			return fmt.Errorf("state: desired %s: %w", p.Host, err)
		}
	}
	doc, err := s.doc(ctx, d)
	if err == nil {
		err = s.recheck(ctx, r)
	}
	if ctx.Err() != nil {
		return endedWhy(r, ctx)
	}
	if err != nil {
		return err
	}
	w.Header().Set(api.IndexHeader, fmt.Sprint(idx))
	return writeJSON(w, http.StatusOK, api.Desired{Index: uint64(idx), Doc: doc})
}

// report stores what an agent says about its host.
func (s *Server) report(w http.ResponseWriter, r *http.Request, p *principal) error {
	var rep api.Report
	if err := decode(r, &rep); err != nil {
		return err
	}
	rep.State.Host = p.Host
	if rep.State.Apps == nil {
		rep.State.Apps = map[string]*api.AppStatus{}
	}
	rec := repo.Report{State: rep.State, LastSeen: time.Now().UTC(), From: r.RemoteAddr}
	s.heard.Store(p.Host, rec.LastSeen)
	select {
	case err := <-s.reportW.put(p.Host, rec):
		if err != nil {
			return err
		}
	case <-r.Context().Done():
		return r.Context().Err()
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// lastSeen is when host last reported, or joined if it never did: the
// stored report's time, or a later report this server received that is
// not stored yet (its store is slow; the host is not).
func (s *Server) lastSeen(h repo.Host, reps map[string]repo.Report) time.Time {
	seen := h.Joined
	if rr, ok := reps[h.Name]; ok && rr.LastSeen.After(seen) {
		seen = rr.LastSeen
	}
	if t, ok := s.heardAt(h.Name); ok && t.After(seen) {
		seen = t
	}
	return seen
}

// heardAt is when this server last received a report from host.
func (s *Server) heardAt(host string) (time.Time, bool) {
	v, ok := s.heard.Load(host)
	if !ok {
		return time.Time{}, false
	}
	return v.(time.Time), true
}

// otherGroups returns, of hosts, those that run app through a group other
// than group, with that group: one app runs on a host through one group
// at a time, so a rollout of group's release must not take them over.
func (s *Server) otherGroups(ctx context.Context, app, group string, hosts []string) (map[string]string, error) {
	out := map[string]string{}
	for _, h := range hosts {
		d, err := s.repo.Desired(ctx, h)
		if err != nil {
			return nil, err
		}
		if e, ok := d.Apps[app]; ok && e.Group != "" && e.Group != group {
			out[h] = e.Group
		}
	}
	return out, nil
}
