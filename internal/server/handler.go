package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/internal/server/ui"
)

// handlerFunc is an API handler: it answers, or returns an error that
// writeError turns into the response.
type handlerFunc func(w http.ResponseWriter, r *http.Request, p *principal) error

// roleNone marks the routes that need no bearer token.
const roleNone = ""

// route is one API endpoint and the role it needs.
type route struct {
	pattern string // "METHOD /path"
	role    string
	fn      handlerFunc
}

// apiRoutes is every API endpoint: the security tests walk this table, so
// a new route is checked for authentication and roles without being
// listed again.
func (s *Server) apiRoutes() []route {
	return []route{
		{"GET " + api.PathHealth, roleNone, func(w http.ResponseWriter, _ *http.Request, _ *principal) error {
			_, err := io.WriteString(w, "ok\n")
			return err
		}},
		{"POST " + api.PathArtifacts, api.RoleDeployer, s.upload},
		{"GET " + api.PathArtifacts, api.RoleViewer, s.listArtifacts},
		{"HEAD " + api.PathArtifact, roleAny, s.download},
		{"GET " + api.PathArtifact, roleAny, s.download},
		{"GET " + api.PathApps, api.RoleViewer, s.listApps},
		{"GET " + api.PathReleases, api.RoleViewer, s.listReleases},
		{"POST " + api.PathReleases, api.RoleDeployer, s.makeRelease},
		{"POST " + api.PathSignatures, api.RoleDeployer, s.addSignature},
		{"POST " + api.PathDeployments, api.RoleDeployer, s.deploy},
		{"GET " + api.PathDeployments, api.RoleViewer, s.listDeployments},
		{"GET " + api.PathDeployment, api.RoleViewer, s.getDeployment},
		{"POST " + api.PathPromote, api.RoleDeployer, s.promote},
		{"POST " + api.PathRollback, api.RoleDeployer, s.rollback},
		{"GET " + api.PathStatus, api.RoleViewer, s.status},
		{"GET " + api.PathConfig, api.RoleViewer, s.getConfig},
		{"PATCH " + api.PathConfig, api.RoleDeployer, s.changeConfig},
		{"GET " + api.PathConfigHistory, api.RoleViewer, s.configHistory},
		{"GET " + api.PathConfigDiff, api.RoleViewer, s.configDiff},
		{"POST " + api.PathTokens, api.RoleAdmin, s.createTokenHandler},
		{"GET " + api.PathTokens, api.RoleAdmin, s.listTokens},
		{"DELETE " + api.PathToken, api.RoleAdmin, s.revokeToken},
		{"POST " + api.PathJoinTokens, api.RoleAdmin, s.createJoinToken},
		{"GET " + api.PathJoinTokens, api.RoleAdmin, s.listJoinTokens},
		{"DELETE " + api.PathHost, api.RoleAdmin, s.removeHost},
		{"GET " + api.PathLocks, api.RoleAdmin, s.listLocks},
		{"DELETE " + api.PathLock, api.RoleAdmin, s.breakLock},
		{"GET " + api.PathAudit, api.RoleAdmin, s.listAudit},
		{"POST " + api.PathGC, api.RoleAdmin, s.gc},
		{"GET " + api.PathWhoami, roleAny, s.whoami},
		{"GET " + api.PathLogs, api.RoleViewer, s.logs},
		{"GET " + api.PathAgentLogs, api.RoleAgent, s.agentLogRequests},
		{"POST " + api.PathAgentLogData, api.RoleAgent, s.agentLogData},
		{"POST " + api.PathAgentJoin, roleNone, s.join},
		{"GET " + api.PathDesired, api.RoleAgent, s.desired},
		{"POST " + api.PathReport, api.RoleAgent, s.report},
	}
}

func (s *Server) routes() {
	m := http.NewServeMux()
	for _, r := range s.apiRoutes() {
		m.Handle(r.pattern, s.handler(r.role, r.fn))
	}
	m.Handle("/v1/", s.handler(roleNone, func(_ http.ResponseWriter, r *http.Request, _ *principal) error {
		return ferry.Errorf(ferry.ENOTFOUND, "no such endpoint: %s %s", r.Method, r.URL.Path)
	}))
	// Everything else is the web UI, which calls this same API in-process.
	m.Handle("/", ui.New(m, s.log.With("part", "ui")))
	s.mux = securityHeaders(m)
}

// handler authenticates (unless role is roleNone), checks the role and
// runs f, writing its error.
func (s *Server) handler(role string, f handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p *principal
		err := func() error {
			if role != roleNone {
				var err error
				if p, err = s.authenticate(r.Context(), r); err != nil {
					return err
				}
				if err := p.require(role); err != nil {
					return err
				}
			}
			return f(w, r, p)
		}()
		if err != nil {
			s.writeError(w, r, err)
		}
	})
}

// writeError answers err as an api.ErrorBody. A request whose client went
// away (or a server shutting down) gets nothing.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil && errors.Is(err, r.Context().Err()) {
		return
	}
	code := ferry.ErrorCode(err)
	if code == ferry.EINTERNAL {
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, logErr, err)
	}
	var body api.ErrorBody
	body.Error.Code, body.Error.Message = code, err.Error()
	if code == ferry.EUNAUTH {
		w.Header().Set("WWW-Authenticate", `Bearer realm="ferry"`)
	}
	if r.Method == http.MethodHead {
		w.WriteHeader(api.HTTPStatus(code))
		return
	}
	writeJSON(w, api.HTTPStatus(code), body)
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, err = w.Write(append(b, '\n'))
	return err
}

// maxBody bounds JSON request bodies (reports with many processes are the
// largest).
const maxBody = 4 << 20

// decode reads r's JSON body into v; a malformed body is EINVALID.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	if err := dec.Decode(v); err != nil {
		return ferry.WrapError(ferry.EINVALID, err, "request body")
	}
	return nil
}

// blockingParams reads ?index=N&wait=D of a blocking query; wait is capped
// at max and defaults to def.
func blockingParams(r *http.Request, def, max time.Duration) (index int64, wait time.Duration, err error) {
	q := r.URL.Query()
	if v := q.Get("index"); v != "" {
		n, err := strconv.ParseUint(v, 10, 63)
		if err != nil {
			return 0, 0, ferry.Errorf(ferry.EINVALID, "index %q: want a non-negative integer", v)
		}
		index = int64(n)
	}
	wait = def
	if v := q.Get("wait"); v != "" {
		if wait, err = time.ParseDuration(v); err != nil || wait < 0 {
			return 0, 0, ferry.Errorf(ferry.EINVALID, "wait %q: want a duration such as 30s or 5m", v)
		}
	}
	return index, min(wait, max), nil
}

// waitKey is repo.Wait: a blocking query on key.
func (s *Server) waitKey(ctx context.Context, key string, index int64, wait time.Duration) ([]byte, int64, error) {
	return s.repo.Wait(ctx, key, index, wait)
}
