package server

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/ferrydeploy/ferry/api"
)

// lockedBuffer is a log sink several goroutines write.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestSecurityMatrix walks every API route (the server's own table, so a
// new route is covered without being listed here): 401 without a token or
// with a join token, 403 for every role below the route's and across the
// user/agent line, 403 for a token scoped to another app or group where
// the route names one; no answer of any route carries a secret or a
// token; an agent gets only its own group's secrets and its own desired
// state's artifacts; plain HTTP is refused; and the server's debug log
// holds no token and no secret.
func TestSecurityMatrix(t *testing.T) {
	logs := &lockedBuffer{}
	ts := startServer(t, t.TempDir(), func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	const secret = "s3cr3t-never-shown-9f2c"
	web := ts.publish("web", "1.0.0")
	other := ts.publish("other", "1.0.0")
	prod := ts.join("web-1", "prod")
	staging := ts.join("web-2", "staging")
	ts.report(prod, "web-1", "", "", "", "")
	ts.report(staging, "web-2", "", "", "", "")
	ts.must(200, "PATCH", "/v1/apps/web/config", ts.admin, api.ConfigChange{Group: "prod", Set: map[string]string{"API_KEY": secret}, Secret: true}, nil)
	var dep api.Deployment
	ts.must(201, "POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "web", Group: "prod", SHA256: web.SHA256}, &dep)
	ts.waitDesired(prod, "web", "v1")
	var jt api.TokenCreated
	ts.must(201, "POST", api.PathJoinTokens, ts.admin, api.JoinTokenRequest{Groups: []string{"prod"}}, &jt)
	tok := map[string]string{
		"admin":             ts.admin,
		"viewer":            ts.token(api.TokenRequest{Name: "v", Role: api.RoleViewer}),
		"deployer":          ts.token(api.TokenRequest{Name: "d", Role: api.RoleDeployer}),
		"deployer(other)":   ts.token(api.TokenRequest{Name: "do", Role: api.RoleDeployer, Apps: []string{"other"}}),
		"deployer(staging)": ts.token(api.TokenRequest{Name: "ds", Role: api.RoleDeployer, Groups: []string{"staging"}}),
		"viewer(other)":     ts.token(api.TokenRequest{Name: "vo", Role: api.RoleViewer, Apps: []string{"other"}}),
		"agent":             prod,
	}
	var tokens []api.Token
	ts.must(200, "GET", api.PathTokens, ts.admin, nil, &tokens)
	fill := strings.NewReplacer("{sha256}", web.SHA256, "{app}", "web", "{n}", "1", "{id}", dep.ID, "{group}", "prod")
	bodies := matrixBodies(web.SHA256)
	rank := map[string]int{api.RoleViewer: 1, api.RoleDeployer: 2, api.RoleAdmin: 3}
	send := func(pattern, token string) (int, string) {
		method, path, _ := strings.Cut(pattern, " ")
		path = fill.Replace(path)
		if strings.HasSuffix(pattern, api.PathLogs) || strings.HasSuffix(pattern, api.PathAgentLogs) {
			path += "?app=web&wait=1ms"
		}
		hdr := map[string]string{}
		if pattern == "POST "+api.PathArtifacts {
			hdr[api.SHA256Header], hdr[api.AppHeader] = other.SHA256, "web"
		}
		return ts.send(method, path, token, strings.NewReader(bodies[pattern]), hdr, nil)
	}
	for _, r := range ts.srv.apiRoutes() {
		if r.role == roleNone {
			continue
		}
		if code, _ := send(r.pattern, ""); code != 401 {
			t.Errorf("%s without a token: %d, want 401", r.pattern, code)
		}
		if code, _ := send(r.pattern, jt.Secret); code != 401 {
			t.Errorf("%s with a join token: %d, want 401", r.pattern, code)
		}
		for name, token := range tok {
			role := strings.Split(name, "(")[0]
			var denied bool
			switch {
			case r.role == roleAny:
				denied = false
			case r.role == api.RoleAgent:
				denied = role != "agent"
			case role == "agent":
				denied = true
			default:
				denied = rank[role] < rank[r.role]
			}
			// A token scoped away from web (or prod) may not touch it
			// where the route names it; logs hide the hosts of another
			// group (404) rather than refuse.
			body := bodies[r.pattern]
			appNamed := strings.ContainsAny(r.pattern, "{") && !strings.Contains(r.pattern, "{sha256}") && !strings.HasSuffix(r.pattern, "/tokens/{id}") ||
				strings.Contains(r.pattern, "{sha256}") && r.role != api.RoleAgent ||
				strings.Contains(body, `"app":"web"`) || r.pattern == "POST "+api.PathArtifacts || r.pattern == "GET "+api.PathLogs
			// An artifact of an app that runs only in prod is prod's.
			groupNamed := strings.Contains(r.pattern, "{id}") && !strings.HasSuffix(r.pattern, "/tokens/{id}") && !strings.Contains(r.pattern, "/agent/") ||
				strings.Contains(r.pattern, "{group}") || strings.Contains(body, `"group":"prod"`) || r.pattern == "GET "+api.PathLogs ||
				strings.Contains(r.pattern, "{sha256}") && r.role != api.RoleAgent
			want := 403
			if !denied && (strings.Contains(name, "(other)") && appNamed || strings.Contains(name, "(staging)") && groupNamed) {
				denied = true
				if r.pattern == "GET "+api.PathLogs && strings.Contains(name, "(staging)") {
					want = 404
				}
			}
			code, msg := send(r.pattern, token)
			if denied && code != want {
				t.Errorf("%s as %s: %d (%s), want %d", r.pattern, name, code, msg, want)
			}
			if !denied && (code == 401 || code == 403) {
				t.Errorf("%s as %s: %d (%s), want it allowed", r.pattern, name, code, msg)
			}
			for _, s := range append([]string{secret}, tok["admin"], tok["agent"], jt.Secret) {
				if strings.Contains(msg, s) {
					t.Errorf("%s as %s: the answer holds a secret or token", r.pattern, name)
				}
			}
		}
	}
	// Only prod's agent gets prod's secret; an agent fetches only what its
	// own desired state names.
	if d := ts.desired(prod, 0, 0); d.Doc.Apps["web"].Env["API_KEY"] != secret {
		t.Errorf("prod's agent did not get its group's secret")
	}
	if code, msg := ts.call("GET", api.PathDesired, staging, nil, nil); code != 200 || strings.Contains(msg, secret) {
		t.Errorf("staging's desired state: %d, or it holds prod's secret", code)
	}
	if code, _ := ts.send("GET", "/v1/artifacts/"+web.SHA256, staging, nil, nil, nil); code != 403 {
		t.Errorf("staging's agent fetched an artifact its desired state does not name: %d", code)
	}
	// Plain HTTP to the TLS listener.
	addr := strings.TrimPrefix(ts.srv.URL(), "https://")
	if resp, err := http.Get("http://" + addr + api.PathHealth); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode < 400 {
			t.Errorf("plain HTTP answered %d %q", resp.StatusCode, b)
		}
	}
	out := logs.String()
	if !strings.Contains(out, "level=") {
		t.Fatal("the server logged nothing: the check below would prove nothing")
	}
	for name, s := range map[string]string{"the secret": secret, "the admin token": ts.admin, "an agent credential": prod, "a join token": jt.Secret, "a viewer token": tok["viewer"]} {
		if strings.Contains(out, s) {
			t.Errorf("the server's log holds %s", name)
		}
		// Nor the secret half alone.
		if i := strings.LastIndexByte(s, '_'); i > 0 && strings.Contains(out, s[i+1:]) {
			t.Errorf("the server's log holds the secret part of %s", name)
		}
	}
}

// TestRouteRoles pins who may call what: the route table against
// testdata/routes.txt, so loosening a route's role is a visible change to
// that file, not an edit the matrix above would follow silently
// (FERRY_UPDATE_GOLDEN=1 rewrites it).
func TestRouteRoles(t *testing.T) {
	ts := startServer(t, t.TempDir())
	var b strings.Builder
	for _, r := range ts.srv.apiRoutes() {
		role := r.role
		switch role {
		case roleNone:
			role = "(no token)"
		case roleAny:
			role = "(any credential)"
		}
		b.WriteString(r.pattern + "\t" + role + "\n")
	}
	path := "testdata/routes.txt"
	if os.Getenv("FERRY_UPDATE_GOLDEN") != "" {
		os.MkdirAll("testdata", 0o755)
		os.WriteFile(path, []byte(b.String()), 0o644)
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if b.String() != string(want) {
		t.Errorf("the routes' roles differ from %s (FERRY_UPDATE_GOLDEN=1 to accept):\ngot:\n%s\nwant:\n%s", path, b.String(), want)
	}
}

// matrixBodies are the request bodies the route matrices send, each
// naming app web, group prod and web's artifact sum where a route takes one.
func matrixBodies(sum string) map[string]string {
	return map[string]string{
		"POST " + api.PathDeployments: `{"app":"web","group":"prod","sha256":"` + sum + `"}`,
		"POST " + api.PathRollback:    `{"app":"web","group":"prod"}`,
		"POST " + api.PathReleases:    `{"group":"prod","sha256":"` + sum + `"}`,
		"PATCH " + api.PathConfig:     `{"group":"prod","set":{"X":"1"}}`,
		"POST " + api.PathTokens:      `{"name":"n","role":"viewer"}`,
		"POST " + api.PathJoinTokens:  `{"groups":["prod"]}`,
		"POST " + api.PathGC:          `{"keep":100,"min_age":3600000000000,"dry_run":true}`,
		"POST " + api.PathSignatures:  `{}`,
		"POST " + api.PathReport:      `{"state":{"host":"web-1","apps":{}}}`,
	}
}
