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

// allowed reports whether p may touch app in group; "" skips a check.
func (p *principal) allowed(app, group string) bool {
	if app != "" && len(p.Apps) > 0 && !slices.Contains(p.Apps, app) {
		return false
	}
	return group == "" || len(p.Groups) == 0 || slices.Contains(p.Groups, group)
}

// scope is allowed as an error.
func (p *principal) scope(app, group string) error {
	if p.allowed(app, group) {
		return nil
	}
	what := "app " + app
	if !p.allowed(app, "") {
		return ferry.Errorf(ferry.EDENIED, "token %s may not touch %s (it may: %s)", p.Name, what, strings.Join(p.Apps, ", "))
	}
	return ferry.Errorf(ferry.EDENIED, "token %s may not touch group %s (it may: %s)", p.Name, group, strings.Join(p.Groups, ", "))
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
	t := api.Token{Name: req.Name, Role: req.Role, Apps: req.Apps, Groups: req.Groups}
	if req.TTL > 0 {
		t.Expires = time.Now().Add(req.TTL).UTC()
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
		if !nameRe.MatchString(g) {
			return ferry.Errorf(ferry.EINVALID, "group %q: use letters, digits, ., - and _", g)
		}
	}
	ttl := req.TTL
	if ttl <= 0 {
		ttl = 24 * time.Hour
	}
	tc, err := s.newToken(r.Context(), api.Token{Name: "join:" + strings.Join(req.Groups, ","), Role: roleJoin, Groups: req.Groups, Expires: time.Now().Add(ttl).UTC()})
	if err != nil {
		return err
	}
	s.auditReq(r, p, api.AuditEvent{Action: "join-token.create", Target: "token/" + tc.ID, Detail: "groups " + strings.Join(req.Groups, ",")})
	return writeJSON(w, http.StatusCreated, tc)
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request, _ *principal) error {
	recs, err := listJSON[tokenRecord](r.Context(), s.st, prefixTokens)
	if err != nil {
		return err
	}
	out := make([]api.Token, 0, len(recs))
	for _, rec := range recs {
		out = append(out, rec.Token)
	}
	slices.SortFunc(out, func(a, b api.Token) int { return a.Created.Compare(b.Created) })
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request, p *principal) error {
	id := r.PathValue("id")
	found := false
	rec, err := update(r.Context(), s.st, prefixTokens+id, func(rec *tokenRecord, exists bool) error {
		if !exists {
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
