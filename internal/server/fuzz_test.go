package server

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry/api"
)

// FuzzAPI sends arbitrary bodies and queries to the API's routes as an
// admin, in process: a malformed request must get a 4xx (an input error
// the message explains), never a 5xx or a panic, and must leave the server
// answering.
func FuzzAPI(f *testing.F) {
	data := f.TempDir()
	s, err := newServer(f, Config{Data: data, Listen: "127.0.0.1:0", HostLostAfter: time.Minute})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.close() })
	admin, err := ReadAdminToken(data)
	if err != nil {
		f.Fatal(err)
	}
	routes := []struct{ method, path string }{
		{"POST", api.PathDeployments}, {"POST", api.PathRollback}, {"POST", api.PathTokens},
		{"POST", api.PathJoinTokens}, {"PATCH", "/v1/apps/hello/config"}, {"POST", "/v1/apps/hello/releases"},
		{"POST", api.PathGC}, {"POST", api.PathAgentJoin}, {"GET", api.PathLogs}, {"GET", api.PathAudit},
		{"GET", api.PathDeployments}, {"GET", "/v1/deployments/d1"}, {"GET", "/v1/apps/hello/config/diff"},
		{"POST", "/v1/apps/hello/releases/1/signatures"}, {"GET", api.PathStatus}, {"HEAD", "/v1/artifacts/00"},
		{"GET", "/v1/apps/hello/config"}, {"DELETE", "/v1/locks/hello/prod"}, {"POST", api.PathArtifacts},
	}
	for i, body := range []string{
		`{"app":"hello","group":"prod","version":"1.0.0","strategy":"rolling","batch":"25%"}`,
		`{"app":"hello","group":"prod","release":-3}`,
		`{"name":"ci","role":"deployer","apps":["hello"],"ttl":-1}`,
		`{"groups":["prod"],"ttl":1000000000}`,
		`{"group":"prod","set":{"A":"1","":"x"},"secret":true,"unset":["B"]}`,
		`{"version":"1.0.0"}`, `{"keep":-1,"min_age":0}`, `{"token":"ferry_a_b","name":"../x"}`,
		``, `{`, `null`, `[]`, `{"app":["x"]}`, strings.Repeat("[", 10000),
	} {
		f.Add(uint8(i), []byte(body), "app=hello&group=prod&from=1&to=2&limit=5&since=10m&lines=3&index=1&wait=1ms")
	}
	f.Fuzz(func(t *testing.T, route uint8, body []byte, query string) {
		r := routes[int(route)%len(routes)]
		req := httptest.NewRequest(r.method, r.path, bytes.NewReader(body))
		req.URL.RawQuery = query // as sent, unparsed: the server must cope
		// Blocking queries (?index=N) wait for a change: not for long here.
		ctx, cancel := context.WithTimeout(req.Context(), 200*time.Millisecond)
		defer cancel()
		req = req.WithContext(ctx)
		req.Header.Set("Authorization", "Bearer "+admin)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(api.SHA256Header, strings.Repeat("0", 64))
		req.Header.Set(api.AppHeader, "hello")
		rec := httptest.NewRecorder()
		s.mux.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %s?%s with %q: %d %s", r.method, r.path, query, body, rec.Code, rec.Body.String())
		}
		probe := httptest.NewRecorder()
		s.mux.ServeHTTP(probe, httptest.NewRequest("GET", api.PathHealth, nil))
		if probe.Code != http.StatusOK {
			t.Fatalf("after %s %s: /healthz %d", r.method, r.path, probe.Code)
		}
	})
}
