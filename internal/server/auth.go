package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/internal/fsutil"
)

// roleJoin marks join tokens: they register hosts through
// /v1/agent/join and are no bearer credential.
const roleJoin = "join"

// roleAny is any valid credential: routes that check more themselves.
const roleAny = "any"

// tokenRecord is a token as stored: the secret only as its sha256.
type tokenRecord struct {
	api.Token
	Hash string `json:"hash"`
}

var roleRank = map[string]int{api.RoleViewer: 1, api.RoleDeployer: 2, api.RoleAdmin: 3}

var tokenIDRe = regexp.MustCompile(`^[0-9a-f]{16}$`)

// principal is who a request comes from.
type principal struct {
	api.Token
	remote string
}

// who names the principal in audit events and lock owners.
func (p *principal) who() string {
	if p == nil {
		return "anonymous"
	}
	if p.Host != "" {
		return "host:" + p.Host
	}
	return p.Name
}

// require checks that p's role is at least role; agent credentials match
// only RoleAgent, and only they do.
func (p *principal) require(role string) error {
	if role == roleAny {
		return nil
	}
	if role == api.RoleAgent || p.Role == api.RoleAgent {
		if role != p.Role {
			return ferry.Errorf(ferry.EDENIED, "token %s has role %s; this needs %s", p.Name, p.Role, role)
		}
		return nil
	}
	if roleRank[p.Role] < roleRank[role] {
		return ferry.Errorf(ferry.EDENIED, "token %s has role %s; this needs %s", p.Name, p.Role, role)
	}
	return nil
}

// coversApp reports whether p's scope includes app; "" (no app in
// particular: every app) only a token scoped to no apps covers.
func (p *principal) coversApp(app string) bool {
	if len(p.Apps) == 0 {
		return true
	}
	return app != "" && slices.Contains(p.Apps, app)
}

// coversGroup reports whether p's scope includes group; "" stands for
// every group — app-wide config, which every group inherits — and only a
// token scoped to no groups covers it.
func (p *principal) coversGroup(group string) bool {
	if len(p.Groups) == 0 {
		return true
	}
	return group != "" && slices.Contains(p.Groups, group)
}

// allowed reports whether p may touch app in group. group "" means the
// app as every group sees it (app-wide config, artifacts downloads of a
// token scoped to no groups): only a token scoped to all groups may.
func (p *principal) allowed(app, group string) bool {
	return p.coversApp(app) && p.coversGroup(group)
}

// scope is allowed as an error.
func (p *principal) scope(app, group string) error {
	if err := p.scopeApp(app); err != nil {
		return err
	}
	if p.coversGroup(group) {
		return nil
	}
	if group == "" {
		return ferry.Errorf(ferry.EDENIED, "token %s may touch only the groups %s, and app-wide config reaches every group: give --group", p.Name, strings.Join(p.Groups, ", "))
	}
	return ferry.Errorf(ferry.EDENIED, "token %s may not touch group %s (it may: %s)", p.Name, group, strings.Join(p.Groups, ", "))
}

// scopeApp checks app alone: for what belongs to the app and no group
// (publishing an artifact, reading its releases).
func (p *principal) scopeApp(app string) error {
	if p.coversApp(app) {
		return nil
	}
	return ferry.Errorf(ferry.EDENIED, "token %s may not touch app %s (it may: %s)", p.Name, app, strings.Join(p.Apps, ", "))
}

// within reports whether the scope of t (apps × groups, role) lies inside
// p's: what a scoped admin may create, list and revoke.
func (p *principal) within(t api.Token) bool {
	if roleRank[t.Role] > roleRank[p.Role] && t.Role != roleJoin && t.Role != api.RoleAgent {
		return false
	}
	if len(p.Apps) > 0 && (len(t.Apps) == 0 || !subset(t.Apps, p.Apps)) {
		return false
	}
	return len(p.Groups) == 0 || (len(t.Groups) > 0 && subset(t.Groups, p.Groups))
}

// subset reports whether every element of a is in b.
func subset(a, b []string) bool {
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// parseToken splits "ferry_<id>_<secret>".
func parseToken(tok string) (id, secret string, ok bool) {
	rest, ok := strings.CutPrefix(tok, "ferry_")
	if !ok {
		return "", "", false
	}
	id, secret, ok = strings.Cut(rest, "_")
	return id, secret, ok && tokenIDRe.MatchString(id) && secret != ""
}

// newToken stores t with a fresh id and secret and returns it with the
// whole token string as Secret.
func (s *Server) newToken(ctx context.Context, t api.Token) (api.TokenCreated, error) {
	t.ID, t.Created = randomHex(8), time.Now().UTC()
	secret := randomHex(32)
	if err := s.putJSON(ctx, prefixTokens+t.ID, tokenRecord{Token: t, Hash: hashSecret(secret)}); err != nil {
		return api.TokenCreated{}, err
	}
	return api.TokenCreated{Token: t, Secret: "ferry_" + t.ID + "_" + secret}, nil
}

// checkToken finds the valid token tok names. Every failure is EUNAUTH
// with the reason.
func (s *Server) checkToken(ctx context.Context, tok string) (tokenRecord, error) {
	var rec tokenRecord
	id, secret, ok := parseToken(tok)
	if !ok {
		return rec, ferry.Errorf(ferry.EUNAUTH, "malformed token: want ferry_<id>_<secret>")
	}
	found, err := s.lookup(ctx, prefixTokens+id, &rec)
	if err != nil {
		return rec, err
	}
	if !found || subtle.ConstantTimeCompare([]byte(rec.Hash), []byte(hashSecret(secret))) != 1 {
		return rec, ferry.Errorf(ferry.EUNAUTH, "invalid token")
	}
	if rec.Revoked {
		return rec, ferry.Errorf(ferry.EUNAUTH, "token %s was revoked", rec.Name)
	}
	if !rec.Expires.IsZero() && time.Now().After(rec.Expires) {
		return rec, ferry.Errorf(ferry.EUNAUTH, "token %s expired at %s", rec.Name, rec.Expires.Format(time.RFC3339))
	}
	return rec, nil
}

// authenticate finds the principal of r's bearer token.
func (s *Server) authenticate(ctx context.Context, r *http.Request) (*principal, error) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" {
		return nil, ferry.Errorf(ferry.EUNAUTH, "no token: send Authorization: Bearer TOKEN (ferry login saves one)")
	}
	rec, err := s.checkToken(ctx, strings.TrimSpace(tok))
	if err != nil {
		return nil, err
	}
	if rec.Role == roleJoin {
		return nil, ferry.Errorf(ferry.EUNAUTH, "a join token only registers a host (ferry agent --join)")
	}
	return &principal{Token: rec.Token, remote: r.RemoteAddr}, nil
}

// bootstrap makes the admin token on first start.
func (s *Server) bootstrap(ctx context.Context) error {
	if _, err := s.st.Get(ctx, keyInit); ferry.ErrorCode(err) != ferry.ENOTFOUND {
		return err
	}
	tc, err := s.newToken(ctx, api.Token{Name: "admin", Role: api.RoleAdmin})
	if err != nil {
		return fmt.Errorf("server: admin token: %w", err)
	}
	if s.cfg.Data != "" {
		if err := fsutil.WriteFile(filepath.Join(s.cfg.Data, AdminTokenFile), []byte(tc.Secret+"\n"), 0o600); err != nil {
			return fmt.Errorf("server: admin token: %w", err)
		}
	}
	if err := s.putJSON(ctx, keyInit, map[string]time.Time{"created": time.Now().UTC()}); err != nil {
		return err
	}
	s.adminToken = tc.Secret
	s.audit(ctx, nil, api.AuditEvent{Action: "token.create", Target: "token/" + tc.ID, Detail: "admin token at first start"})
	return nil
}

// ReadAdminToken reads the admin token a server wrote to its data dir.
func ReadAdminToken(data string) (string, error) {
	b, err := os.ReadFile(filepath.Join(data, AdminTokenFile))
	return strings.TrimSpace(string(b)), err
}

func (s *Server) createTokenHandler(w http.ResponseWriter, r *http.Request, p *principal) error {
	var req api.TokenRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if _, ok := roleRank[req.Role]; !ok {
		return ferry.Errorf(ferry.EINVALID, "role %q: use viewer, deployer or admin", req.Role)
	}
	if req.Name == "" {
		return ferry.Errorf(ferry.EINVALID, "name: missing; say who or what the token is for")
	}
	if req.TTL < 0 {
		return ferry.Errorf(ferry.EINVALID, "ttl: negative")
	}
	t := api.Token{Name: req.Name, Role: req.Role, Apps: req.Apps, Groups: req.Groups, By: p.who()}
	if req.TTL > 0 {
		t.Expires = time.Now().Add(req.TTL).UTC()
	}
	if !p.within(t) {
		return ferry.Errorf(ferry.EDENIED, "token %s (apps %s, groups %s) may create tokens only within its own scope: give --apps and --groups among those", p.Name, scopeList(p.Apps), scopeList(p.Groups))
	}
	tc, err := s.newToken(r.Context(), t)
	if err != nil {
		return err
	}
	s.auditReq(r, p, api.AuditEvent{Action: "token.create", Target: "token/" + tc.ID, Detail: fmt.Sprintf("%s %s apps=%v groups=%v", tc.Name, tc.Role, tc.Apps, tc.Groups)})
	return writeJSON(w, http.StatusCreated, tc)
}

func (s *Server) createJoinToken(w http.ResponseWriter, r *http.Request, p *principal) error {
	var req api.JoinTokenRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if len(req.Groups) == 0 {
		return ferry.Errorf(ferry.EINVALID, "groups: missing; name the group(s) hosts join with this token")
	}
	for _, g := range req.Groups {
		if err := ferry.CheckGroupName(g); err != nil {
			return fmt.Errorf("groups: %w", err)
		}
	}
	if !p.coversApp("") {
		// A host gets every app of its groups, and their secrets.
		return ferry.Errorf(ferry.EDENIED, "token %s may touch only the apps %s; a host that joins runs every app of its groups: join tokens need a token scoped to all apps", p.Name, strings.Join(p.Apps, ", "))
	}
	if !subset(req.Groups, p.Groups) && len(p.Groups) > 0 {
		return ferry.Errorf(ferry.EDENIED, "token %s may touch only the groups %s: hosts it lets join must be in those", p.Name, strings.Join(p.Groups, ", "))
	}
	if req.Uses < 0 {
		return ferry.Errorf(ferry.EINVALID, "uses: negative")
	}
	if req.Replace != "" {
		if err := ferry.CheckHostName(req.Replace); err != nil {
			return fmt.Errorf("replace: %w", err)
		}
		h, _, err := s.repo.Host(r.Context(), req.Replace)
		if ferry.ErrorCode(err) == ferry.ENOTFOUND {
			return ferry.Errorf(ferry.ENOTFOUND, "replace: no host %s (a new host needs no --replace)", req.Replace)
		}
		if err != nil {
			return err
		}
		if !subset(h.Groups, req.Groups) {
			return ferry.Errorf(ferry.EDENIED, "replace: host %s is in %s; a token that takes it over must cover all of them (give --group for each)", h.Name, strings.Join(h.Groups, ", "))
		}
		req.Uses = 1
	}
	ttl := req.TTL
	if ttl <= 0 {
		ttl = DefaultJoinTTL
	}
	tc, err := s.newToken(r.Context(), api.Token{
		Name: "join:" + strings.Join(req.Groups, ","), Role: roleJoin, Groups: req.Groups, Expires: time.Now().Add(ttl).UTC(),
		Uses: req.Uses, Replace: req.Replace, By: p.who(),
	})
	if err != nil {
		return err
	}
	detail := "groups " + strings.Join(req.Groups, ",")
	if req.Replace != "" {
		detail += ", replacing host " + req.Replace
	}
	s.auditReq(r, p, api.AuditEvent{Action: "join-token.create", Target: "token/" + tc.ID, Detail: detail})
	return writeJSON(w, http.StatusCreated, tc)
}

// DefaultJoinTTL is how long a join token works when its creator gives no
// TTL: long enough to provision a host, short enough that one copied into
// a ticket or a shell history is soon useless.
const DefaultJoinTTL = time.Hour

// listJoinTokens answers the join tokens within the caller's scope,
// revoked and expired ones included, oldest first.
func (s *Server) listJoinTokens(w http.ResponseWriter, r *http.Request, p *principal) error {
	return s.writeTokens(w, r, p, func(t api.Token) bool { return t.Role == roleJoin })
}

// writeTokens answers the stored tokens keep accepts that lie within p's
// scope, oldest first.
func (s *Server) writeTokens(w http.ResponseWriter, r *http.Request, p *principal, keep func(api.Token) bool) error {
	recs, err := listJSON[tokenRecord](r.Context(), s.st, prefixTokens)
	if err != nil {
		return err
	}
	out := make([]api.Token, 0, len(recs))
	for _, rec := range recs {
		if keep(rec.Token) && p.within(rec.Token) {
			out = append(out, rec.Token)
		}
	}
	slices.SortFunc(out, func(a, b api.Token) int { return a.Created.Compare(b.Created) })
	return writeJSON(w, http.StatusOK, out)
}

// scopeList names a scope for messages: "all" when it is unrestricted.
func scopeList(names []string) string {
	if len(names) == 0 {
		return "all"
	}
	return strings.Join(names, ",")
}

// listTokens answers the API and host tokens within the caller's scope;
// join tokens have their own listing.
func (s *Server) listTokens(w http.ResponseWriter, r *http.Request, p *principal) error {
	return s.writeTokens(w, r, p, func(t api.Token) bool { return t.Role != roleJoin })
}

func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request, p *principal) error {
	id := r.PathValue("id")
	found := false
	rec, err := update(r.Context(), s.st, prefixTokens+id, func(rec *tokenRecord, exists bool) error {
		if !exists || !p.within(rec.Token) {
			// Outside the caller's scope is as good as absent: a
			// scoped admin learns nothing of other scopes' tokens.
			return errSkip
		}
		found, rec.Revoked = true, true
		return nil
	})
	if err != nil {
		return err
	}
	if !found {
		return ferry.Errorf(ferry.ENOTFOUND, "no token %s", id)
	}
	// What the token has open here ends now; on other servers sharing the
	// state, when their watch of the tokens sees the revoke.
	s.revoker.end(id, errRevoked(rec.Name))
	s.auditReq(r, p, api.AuditEvent{Action: "token.revoke", Target: "token/" + id})
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// whoami answers the caller's own token record: its name, role and scope,
// so a client (the web UI) shows only what the caller may do.
func (s *Server) whoami(w http.ResponseWriter, _ *http.Request, p *principal) error {
	return writeJSON(w, http.StatusOK, p.Token)
}
