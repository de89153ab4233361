package server

import (
	"crypto/ed25519"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/internal/agent"
	"github.com/ferrydeploy/ferry/internal/agent/health"
	"github.com/ferrydeploy/ferry/internal/signature"
	"github.com/ferrydeploy/ferry/internal/testenv"
)

// joinToken makes a join token as admin.
func (ts *testServer) joinToken(req api.JoinTokenRequest) api.TokenCreated {
	ts.t.Helper()
	var jt api.TokenCreated
	ts.must(http.StatusCreated, "POST", api.PathJoinTokens, ts.admin, req, &jt)
	return jt
}

// TestHostTakeover: a join under the name of a host that joined is
// refused whatever group's join token it brings, and leaves the real
// agent working; only a token made to replace exactly that host (and
// covering all its groups), a removal of the host first, or the host's
// own credential may reuse the name.
func TestHostTakeover(t *testing.T) {
	ts := startServer(t, t.TempDir())
	const secret = "prod-only-secret-7c1e"
	web := ts.publish("web", "1.0.0")
	prod := ts.join("web-1", "prod")
	ts.must(200, "PATCH", "/v1/apps/web/config", ts.admin, api.ConfigChange{Group: "prod", Set: map[string]string{"API_KEY": secret}, Secret: true}, nil)
	ts.must(201, "POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "web", Group: "prod", SHA256: web.SHA256}, nil)
	ts.waitDesired(prod, "web", "v1")

	staging := ts.joinToken(api.JoinTokenRequest{Groups: []string{"staging"}})
	prodJoin := ts.joinToken(api.JoinTokenRequest{Groups: []string{"prod"}})
	for name, tok := range map[string]string{"staging's join token": staging.Secret, "prod's own join token": prodJoin.Secret} {
		var jr api.JoinResponse
		code, msg := ts.call("POST", api.PathAgentJoin, "", api.JoinRequest{Token: tok, Name: "web-1"}, &jr)
		if code != http.StatusForbidden || !strings.Contains(msg, "ferry host rm web-1") {
			t.Errorf("join as web-1 with %s: %d %q, want 403 naming ferry host rm", name, code, msg)
		}
		if jr.Secret != "" {
			t.Errorf("join as web-1 with %s handed out a credential", name)
		}
	}
	// The real agent is untouched: its credential works and its group
	// and secret are as before.
	if d := ts.desired(prod, 0, 0); d.Doc.Apps["web"].Env["API_KEY"] != secret {
		t.Fatalf("the real agent lost its desired state: %+v", d.Doc)
	}
	var st api.Status
	ts.must(200, "GET", api.PathStatus, ts.admin, nil, &st)
	if len(st.Hosts) != 1 || !slices.Equal(st.Hosts[0].Groups, []string{"prod"}) {
		t.Errorf("hosts after the refused joins: %+v", st.Hosts)
	}

	// A replace token must cover all the host's groups.
	if code, msg := ts.call("POST", api.PathJoinTokens, ts.admin, api.JoinTokenRequest{Groups: []string{"staging"}, Replace: "web-1"}, nil); code != http.StatusForbidden {
		t.Errorf("replace token for web-1 with staging only: %d %q, want 403", code, msg)
	}
	// A scoped admin cannot make one for another group's host either.
	stagingAdmin := ts.token(api.TokenRequest{Name: "sa", Role: api.RoleAdmin, Groups: []string{"staging"}})
	if code, _ := ts.call("POST", api.PathJoinTokens, stagingAdmin, api.JoinTokenRequest{Groups: []string{"prod"}, Replace: "web-1"}, nil); code != http.StatusForbidden {
		t.Errorf("staging admin made a prod replace token: %d", code)
	}

	// The agent joining again with its own credential (its server's address
	// changed) is no takeover.
	var again api.JoinResponse
	ts.must(200, "POST", api.PathAgentJoin, "", api.JoinRequest{Token: prodJoin.Secret, Name: "web-1", Credential: prod}, &again)
	if code, _ := ts.call("GET", api.PathDesired+"?wait=0s", prod, nil, nil); code != http.StatusUnauthorized {
		t.Errorf("the credential replaced on rejoin still works: %d", code)
	}
	prod = again.Secret

	// A replace token takes over exactly that host, once.
	repl := ts.joinToken(api.JoinTokenRequest{Groups: []string{"prod"}, Replace: "web-1"})
	var jr api.JoinResponse
	ts.must(200, "POST", api.PathAgentJoin, "", api.JoinRequest{Token: repl.Secret, Name: "web-1"}, &jr)
	if code, _ := ts.call("GET", api.PathDesired+"?wait=0s", prod, nil, nil); code != http.StatusUnauthorized {
		t.Errorf("the replaced host's credential still works: %d", code)
	}
	if code, msg := ts.call("POST", api.PathAgentJoin, "", api.JoinRequest{Token: repl.Secret, Name: "web-9"}, nil); code != http.StatusUnauthorized {
		t.Errorf("a replace token joined a second host: %d %q", code, msg)
	}

	// After ferry host rm the name is free, and the new host gets only its
	// token's groups' entries.
	ts.must(http.StatusNoContent, "DELETE", "/v1/hosts/web-1", ts.admin, nil, nil)
	if code, _ := ts.call("GET", api.PathDesired+"?wait=0s", jr.Secret, nil, nil); code != http.StatusUnauthorized {
		t.Errorf("a removed host's credential still works: %d", code)
	}
	newHost := ""
	ts.must(200, "POST", api.PathAgentJoin, "", api.JoinRequest{Token: staging.Secret, Name: "web-1"}, &jr)
	newHost = jr.Secret
	d := ts.desired(newHost, 0, 0)
	if len(d.Doc.Apps) != 0 {
		t.Errorf("a host that joined staging under a former prod host's name got %+v", d.Doc.Apps)
	}
	var audit []api.AuditEvent
	ts.must(200, "GET", api.PathAudit+"?limit=0", ts.admin, nil, &audit)
	if !slices.ContainsFunc(audit, func(e api.AuditEvent) bool { return e.Action == "host.rm" && e.Target == "host/web-1" }) {
		t.Errorf("no audit event for the removal: %+v", audit)
	}
}

// TestJoinTokens: join tokens expire after an hour by default, run out
// after --uses, are listed (within the caller's scope) and revocable.
func TestJoinTokens(t *testing.T) {
	ts := startServer(t, t.TempDir())
	def := ts.joinToken(api.JoinTokenRequest{Groups: []string{"prod"}})
	if ttl := time.Until(def.Expires); ttl > time.Hour || ttl < 59*time.Minute {
		t.Errorf("a join token's default lifetime is %s, want 1h", ttl)
	}
	two := ts.joinToken(api.JoinTokenRequest{Groups: []string{"staging"}, Uses: 2})
	for i, host := range []string{"a", "b", "c"} {
		code, msg := ts.call("POST", api.PathAgentJoin, "", api.JoinRequest{Token: two.Secret, Name: host}, nil)
		if want := map[bool]int{true: 200, false: 401}[i < 2]; code != want {
			t.Errorf("join %d with a 2-use token: %d %q, want %d", i+1, code, msg, want)
		}
	}
	var list []api.Token
	ts.must(200, "GET", api.PathJoinTokens, ts.admin, nil, &list)
	if len(list) != 2 || list[1].ID != two.ID || list[1].Used != 2 || list[1].Uses != 2 {
		t.Errorf("join tokens: %+v", list)
	}
	stagingAdmin := ts.token(api.TokenRequest{Name: "sa", Role: api.RoleAdmin, Groups: []string{"staging"}})
	ts.must(200, "GET", api.PathJoinTokens, stagingAdmin, nil, &list)
	if len(list) != 1 || list[0].ID != two.ID {
		t.Errorf("join tokens a staging admin sees: %+v", list)
	}
	// Revoked: no further joins. A scoped admin cannot revoke prod's.
	if code, _ := ts.call("DELETE", "/v1/tokens/"+def.ID, stagingAdmin, nil, nil); code != http.StatusNotFound {
		t.Errorf("staging admin revoked prod's join token: %d", code)
	}
	ts.must(http.StatusNoContent, "DELETE", "/v1/tokens/"+def.ID, ts.admin, nil, nil)
	if code, _ := ts.call("POST", api.PathAgentJoin, "", api.JoinRequest{Token: def.Secret, Name: "d"}, nil); code != http.StatusUnauthorized {
		t.Errorf("join with a revoked token: %d", code)
	}
}

// TestScopedAdmin: what a scoped admin creates stays within its scope,
// and audit, locks, gc and tokens are filtered or refused outside it.
func TestScopedAdmin(t *testing.T) {
	ts := startServer(t, t.TempDir())
	sa := ts.token(api.TokenRequest{Name: "sa", Role: api.RoleAdmin, Apps: []string{"api"}, Groups: []string{"staging"}})
	for _, req := range []api.TokenRequest{
		{Name: "x", Role: api.RoleAdmin},
		{Name: "x", Role: api.RoleDeployer, Apps: []string{"api"}},
		{Name: "x", Role: api.RoleDeployer, Groups: []string{"staging"}},
		{Name: "x", Role: api.RoleDeployer, Apps: []string{"api", "web"}, Groups: []string{"staging"}},
		{Name: "x", Role: api.RoleViewer, Apps: []string{"api"}, Groups: []string{"prod"}},
	} {
		if code, _ := ts.call("POST", api.PathTokens, sa, req, nil); code != http.StatusForbidden {
			t.Errorf("scoped admin created %+v: %d, want 403", req, code)
		}
	}
	var ok api.TokenCreated
	ts.must(201, "POST", api.PathTokens, sa, api.TokenRequest{Name: "ci", Role: api.RoleDeployer, Apps: []string{"api"}, Groups: []string{"staging"}}, &ok)
	if code, _ := ts.call("POST", api.PathJoinTokens, sa, api.JoinTokenRequest{Groups: []string{"prod"}}, nil); code != http.StatusForbidden {
		t.Errorf("scoped admin made a prod join token: %d", code)
	}
	// Even for its own group: the host would run every app of staging.
	if code, _ := ts.call("POST", api.PathJoinTokens, sa, api.JoinTokenRequest{Groups: []string{"staging"}}, nil); code != http.StatusForbidden {
		t.Errorf("admin scoped to app api made a join token: %d", code)
	}
	groupAdmin := ts.token(api.TokenRequest{Name: "ga", Role: api.RoleAdmin, Groups: []string{"staging"}})
	ts.must(201, "POST", api.PathJoinTokens, groupAdmin, api.JoinTokenRequest{Groups: []string{"staging"}}, nil)

	// Tokens: it sees its own scope's, and cannot revoke the admin's.
	var toks []api.Token
	ts.must(200, "GET", api.PathTokens, sa, nil, &toks)
	for _, tk := range toks {
		if tk.Name == "admin" {
			t.Errorf("scoped admin lists the unscoped admin token")
		}
	}
	ts.must(200, "GET", api.PathTokens, ts.admin, nil, &toks)
	adminID := toks[0].ID
	if code, _ := ts.call("DELETE", "/v1/tokens/"+adminID, sa, nil, nil); code != http.StatusNotFound {
		t.Errorf("scoped admin revoked the admin token: %d", code)
	}

	// Audit: events of other apps and server-wide ones stay hidden.
	ts.publish("web", "1.0.0")
	ts.must(200, "PATCH", "/v1/apps/web/config", ts.admin, api.ConfigChange{Group: "prod", Set: map[string]string{"K": "v"}}, nil)
	ts.must(200, "PATCH", "/v1/apps/api/config", ts.admin, api.ConfigChange{Group: "staging", Set: map[string]string{"K": "v"}}, nil)
	var evs []api.AuditEvent
	ts.must(200, "GET", api.PathAudit+"?limit=0", sa, nil, &evs)
	if len(evs) != 1 || evs[0].App != "api" || evs[0].Group != "staging" {
		t.Errorf("scoped admin's audit: %+v, want only api's staging config change", evs)
	}

	// Locks and gc.
	if code, _ := ts.call("DELETE", "/v1/locks/web/prod", sa, nil, nil); code != http.StatusForbidden {
		t.Errorf("scoped admin broke a lock of another app: %d", code)
	}
	if code, _ := ts.call("POST", api.PathGC, sa, api.GCRequest{Keep: 0}, nil); code != http.StatusForbidden {
		t.Errorf("group-scoped admin ran gc: %d", code)
	}
	appAdmin := ts.token(api.TokenRequest{Name: "aa", Role: api.RoleAdmin, Apps: []string{"api"}})
	var res api.GCResult
	ts.must(200, "POST", api.PathGC, appAdmin, api.GCRequest{Keep: 0}, &res)
	if len(res.Removed) != 0 {
		t.Errorf("an admin scoped to api removed %+v", res.Removed)
	}
	var arts []api.Artifact
	ts.must(200, "GET", api.PathArtifacts, ts.admin, nil, &arts)
	if len(arts) != 1 {
		t.Errorf("web's artifact is gone after gc by an admin of api only: %+v", arts)
	}
}

// TestScopedConfig: app-wide config (every group inherits it) needs a
// token scoped to all groups; a token scoped to one group reads only that
// group's values and the app-wide ones, and no other group's history or
// artifacts.
func TestScopedConfig(t *testing.T) {
	ts := startServer(t, t.TempDir())
	web := ts.publish("web", "1.0.0")
	ts.join("web-1", "prod")
	ts.join("web-2", "staging")
	ts.must(201, "POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "web", Group: "prod", SHA256: web.SHA256}, nil)
	only := ts.publish("prodonly", "1.0.0")
	ts.must(201, "POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "prodonly", Group: "prod", SHA256: only.SHA256}, nil)
	ts.must(200, "PATCH", "/v1/apps/web/config", ts.admin, api.ConfigChange{Group: "prod", Set: map[string]string{"PROD_DB": "postgres://prod-host/db"}}, nil)
	ts.must(200, "PATCH", "/v1/apps/web/config", ts.admin, api.ConfigChange{Set: map[string]string{"LOG_LEVEL": "info"}}, nil)

	dep := ts.token(api.TokenRequest{Name: "ds", Role: api.RoleDeployer, Groups: []string{"staging"}})
	if code, msg := ts.call("PATCH", "/v1/apps/web/config", dep, api.ConfigChange{Set: map[string]string{"LD_PRELOAD": "/tmp/x.so"}}, nil); code != http.StatusForbidden || !strings.Contains(msg, "--group") {
		t.Errorf("staging deployer set app-wide config: %d %q, want 403 saying --group", code, msg)
	}
	ts.must(200, "PATCH", "/v1/apps/web/config", dep, api.ConfigChange{Group: "staging", Set: map[string]string{"X": "1"}}, nil)

	view := ts.token(api.TokenRequest{Name: "vs", Role: api.RoleViewer, Groups: []string{"staging"}})
	if code, _ := ts.call("GET", "/v1/apps/web/config?group=prod", view, nil, nil); code != http.StatusForbidden {
		t.Errorf("staging viewer read prod's config: %d", code)
	}
	var cfg api.Config
	ts.must(200, "GET", "/v1/apps/web/config", view, nil, &cfg)
	for _, v := range cfg.Vars {
		if v.Scope != api.ScopeApp && v.Scope != "staging" {
			t.Errorf("staging viewer sees %s of %s", v.Key, v.Scope)
		}
	}
	if len(cfg.Vars) != 2 {
		t.Errorf("staging viewer's config view: %+v, want LOG_LEVEL and X", cfg.Vars)
	}
	var hist []api.ConfigRevision
	ts.must(200, "GET", "/v1/apps/web/config/history", view, nil, &hist)
	for _, h := range hist {
		if h.Group == "prod" {
			t.Errorf("staging viewer sees prod's config history: %+v", h)
		}
	}
	if len(hist) != 2 {
		t.Errorf("staging viewer's history: %+v, want the app-wide and the staging revision", hist)
	}
	var diff []api.ConfigDiff
	ts.must(200, "GET", "/v1/apps/web/config/diff?from=0", view, nil, &diff)
	for _, d := range diff {
		if strings.Contains(d.New+d.Old, "prod-host") {
			t.Errorf("staging viewer's diff shows prod's value: %+v", d)
		}
	}
	if code, _ := ts.send("GET", "/v1/artifacts/"+only.SHA256, view, nil, nil, nil); code != http.StatusForbidden {
		t.Errorf("staging viewer downloaded the artifact of an app only prod runs: %d", code)
	}
	var st api.Status
	ts.must(200, "GET", api.PathStatus, view, nil, &st)
	if len(st.Hosts) != 1 || st.Hosts[0].Name != "web-2" {
		t.Errorf("staging viewer's status: %+v", st.Hosts)
	}
}

// TestTwoGroupHost: an app runs on a host through one group at a time: a
// deploy of the app another group runs there is refused before anything
// moves, naming the host and the group, and a failed first deploy to one
// group rolls back without touching what the other runs.
func TestTwoGroupHost(t *testing.T) {
	ts := startServer(t, t.TempDir())
	web := ts.publish("web", "1.0.0")
	api2 := ts.publish("api", "1.0.0")
	shared := ts.joinToken(api.JoinTokenRequest{Groups: []string{"blue", "green"}})
	var jr api.JoinResponse
	ts.must(200, "POST", api.PathAgentJoin, "", api.JoinRequest{Token: shared.Secret, Name: "both"}, &jr)
	cred := jr.Secret
	ts.sim("both", cred, func(app, label string) string {
		if app == "api" {
			return "crashed at start"
		}
		return ""
	})
	var d api.Deployment
	ts.must(201, "POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "web", Group: "blue", SHA256: web.SHA256}, &d)
	ts.waitDeployment(d.ID, "succeeded", func(d api.Deployment) bool { return d.State == api.DeploySucceeded })

	code, msg := ts.call("POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "web", Group: "green", SHA256: web.SHA256}, nil)
	if code != http.StatusBadRequest || !strings.Contains(msg, "both") || !strings.Contains(msg, "blue") {
		t.Errorf("deploy of web to green on a host blue runs it on: %d %q, want 400 naming the host and blue", code, msg)
	}
	if e := ts.desired(cred, 0, 0).Doc.Apps["web"]; e.Group != "blue" || e.Release != "v1" {
		t.Errorf("web on the shared host after the refused deploy: %+v", e)
	}
	// green's rollback leaves blue's web alone.
	ts.must(200, "PATCH", "/v1/apps/web/config", ts.admin, api.ConfigChange{Group: "green", Set: map[string]string{"K": "v"}}, nil)
	if code, msg := ts.call("POST", api.PathRollback, ts.admin, api.RollbackRequest{App: "web", Group: "green", Release: 1}, nil); code < 400 {
		// Allowed only if it touches nothing of blue's.
		if e := ts.desired(cred, 0, 0).Doc.Apps["web"]; e.Group != "blue" {
			t.Errorf("green's rollback took web over from blue: %+v (%d %s)", e, code, msg)
		}
	}

	// A first deploy of api to green fails and rolls back to "no release";
	// blue's web keeps running.
	ts.must(201, "POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "api", Group: "green", SHA256: api2.SHA256, HealthTimeout: 5 * time.Second}, &d)
	d = ts.waitDeployment(d.ID, "over", func(d api.Deployment) bool { return d.State != api.DeployRunning })
	if d.State != api.DeployRolledBack {
		t.Errorf("api's failed deploy: %s %s", d.State, d.Error)
	}
	doc := ts.desired(cred, 0, 0).Doc
	if e := doc.Apps["web"]; e.Group != "blue" || e.Release != "v1" {
		t.Errorf("after green's failed api deploy, web on the host: %+v", e)
	}
	if _, ok := doc.Apps["api"]; ok {
		t.Errorf("the failed api release stayed desired: %+v", doc.Apps["api"])
	}
}

// TestSignatureAfterRefusal: signing a release an agent runs or was
// asked to run changes its desired state, so the agent's blocking query
// wakes with the signed entry.
func TestSignatureAfterRefusal(t *testing.T) {
	ts := startServer(t, t.TempDir())
	web := ts.publish("web", "1.0.0")
	cred := ts.join("web-1", "prod")
	ts.must(201, "POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "web", Group: "prod", SHA256: web.SHA256}, nil)
	d := ts.waitDesired(cred, "web", "v1")
	if len(d.Doc.Apps["web"].Signatures) != 0 {
		t.Fatal("signed before signing")
	}
	_, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	sig := signature.Sign(priv, signature.ReleaseMessage("web", 1, web.SHA256, d.Doc.Apps["web"].ConfigRev))
	woke := make(chan api.Desired, 1)
	go func() { woke <- ts.desired(cred, d.Index, 30*time.Second) }()
	ts.must(200, "POST", "/v1/apps/web/releases/1/signatures", ts.admin, sig, nil)
	select {
	case nd := <-woke:
		if len(nd.Doc.Apps["web"].Signatures) != 1 {
			t.Errorf("the query woke without the signature: %+v", nd.Doc.Apps["web"])
		}
	case <-time.After(10 * time.Second):
		t.Fatal("adding a signature did not wake the host's blocking query")
	}
}

// TestRollbackJudgedOnFreshReports: a host whose last report (from before
// the rollback started) shows a refused release is not failed on it: the
// rollback waits for a report made after it began.
func TestRollbackJudgedOnFreshReports(t *testing.T) {
	ts := startServer(t, t.TempDir())
	v1 := ts.publish("web", "1.0.0")
	v2 := ts.publish("web", "2.0.0")
	cred := ts.join("web-1", "prod")
	var d api.Deployment
	ts.must(201, "POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "web", Group: "prod", SHA256: v1.SHA256}, &d)
	ts.waitDesired(cred, "web", "v1")
	ts.report(cred, "web-1", "web", "v1", "running", "")
	ts.waitDeployment(d.ID, "succeeded", func(d api.Deployment) bool { return d.State == api.DeploySucceeded })
	ts.must(201, "POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "web", Group: "prod", SHA256: v2.SHA256, NoAutoRollback: true}, &d)
	want := ts.waitDesired(cred, "web", "v2").Doc.Apps["web"]
	// The agent refused v2 (unsigned, with --trusted-keys): it still runs
	// v1, and says so as an agent does: v1 failed, v2 rejected.
	refused := &api.AppStatus{Release: "v1-1a2b3c4d", Label: "v1", Number: 1, State: agent.AppFailed, Error: "release v2 refused: no signature",
		Rejected: &want, Processes: []api.ProcessStatus{{Process: "web", Instance: 1, State: "running", Health: health.Healthy}}}
	ts.must(http.StatusNoContent, "POST", api.PathReport, cred, api.Report{State: api.HostReport{Host: "web-1", Apps: map[string]*api.AppStatus{"web": refused}}}, nil)
	ts.waitDeployment(d.ID, "failed", func(d api.Deployment) bool { return d.State == api.DeployFailed })
	// The rollback to v1 starts with that report the newest the server
	// has; the host reports v1 healthy only once its desired state moved.
	var rb api.Deployment
	ts.must(201, "POST", api.PathRollback, ts.admin, api.RollbackRequest{App: "web", Group: "prod", Release: 1}, &rb)
	ts.waitDesired(cred, "web", "v1")
	// The old report must have been looked at: the rollout waits for the
	// next report or tick only once it judged the reports it has.
	ts.waitDeployment(rb.ID, "judging the reports it has", func(d api.Deployment) bool {
		return d.State != api.DeployRunning || testenv.BlockedIn("github.com/ferrydeploy/ferry/internal/orchestrator.(*Orchestrator).waitHealthy")
	})
	ts.report(cred, "web-1", "web", "v1", "running", "")
	rb = ts.waitDeployment(rb.ID, "over", func(d api.Deployment) bool { return d.State != api.DeployRunning })
	if rb.State != api.DeploySucceeded {
		t.Errorf("the rollback to what the host runs: %s %s", rb.State, rb.Error)
	}
}

// TestTenancyMatrix walks every API route (the server's own table) as the
// principals a shared server must keep apart — an admin scoped to
// staging, an admin scoped to another app, a viewer scoped to staging,
// staging's agent, a revoked token — against a server where web runs in
// prod only, with a prod secret and a prod plain value. Each route
// answers as the table below says, and no answer, allowed or refused,
// carries prod's secret, prod's plain value or another credential.
func TestTenancyMatrix(t *testing.T) {
	ts := startServer(t, t.TempDir())
	const secret, plain = "prod-s3cr3t-4b1d", "prod-plain-value-8e2a"
	web := ts.publish("web", "1.0.0")
	prodCred := ts.join("web-1", "prod")
	stagingCred := ts.join("web-2", "staging")
	ts.must(200, "PATCH", "/v1/apps/web/config", ts.admin, api.ConfigChange{Group: "prod", Set: map[string]string{"API_KEY": secret}, Secret: true}, nil)
	ts.must(200, "PATCH", "/v1/apps/web/config", ts.admin, api.ConfigChange{Group: "prod", Set: map[string]string{"DB_HOST": plain}}, nil)
	var dep api.Deployment
	ts.must(201, "POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "web", Group: "prod", SHA256: web.SHA256}, &dep)
	ts.waitDesired(prodCred, "web", "v1")
	jt := ts.joinToken(api.JoinTokenRequest{Groups: []string{"prod"}})
	revoked := ts.token(api.TokenRequest{Name: "gone", Role: api.RoleAdmin})
	ts.must(http.StatusNoContent, "DELETE", "/v1/tokens/"+tokenID(revoked), ts.admin, nil, nil)
	who := map[string]string{
		"admin(staging)":  ts.token(api.TokenRequest{Name: "as", Role: api.RoleAdmin, Groups: []string{"staging"}}),
		"admin(other)":    ts.token(api.TokenRequest{Name: "ao", Role: api.RoleAdmin, Apps: []string{"other"}}),
		"viewer(staging)": ts.token(api.TokenRequest{Name: "vs", Role: api.RoleViewer, Groups: []string{"staging"}}),
		"agent(staging)":  stagingCred,
		"revoked":         revoked,
	}
	// allowed[principal] lists the routes it may use; every other route
	// answers 401 (revoked), 403 or 404 (what the caller may not see).
	viewerRoutes := []string{"GET " + api.PathArtifacts, "GET " + api.PathApps, "GET " + api.PathReleases, "GET " + api.PathDeployments,
		"GET " + api.PathStatus, "GET " + api.PathConfig, "GET " + api.PathConfigHistory, "GET " + api.PathConfigDiff, "GET " + api.PathWhoami}
	adminReads := []string{"GET " + api.PathTokens, "DELETE " + api.PathToken, "GET " + api.PathJoinTokens, "GET " + api.PathLocks, "GET " + api.PathAudit}
	allowed := map[string][]string{
		"admin(staging)": append(append(slices.Clone(viewerRoutes), adminReads...),
			"POST "+api.PathArtifacts, "POST "+api.PathSignatures),
		"admin(other)": append(slices.DeleteFunc(slices.Clone(viewerRoutes), func(r string) bool {
			return strings.Contains(r, "{app}") // web's
		}), append(adminReads, "POST "+api.PathGC)...),
		"viewer(staging)": viewerRoutes,
		"agent(staging)":  {"GET " + api.PathWhoami, "GET " + api.PathAgentLogs, "POST " + api.PathAgentLogData, "GET " + api.PathDesired, "POST " + api.PathReport},
		"revoked":         nil,
	}
	fill := strings.NewReplacer("{sha256}", web.SHA256, "{app}", "web", "{n}", "1", "{id}", dep.ID, "{group}", "prod", "{name}", "web-1")
	bodies := matrixBodies(web.SHA256)
	leaks := map[string]string{"prod's secret": secret, "prod's plain value": plain, "the admin token": ts.admin,
		"prod's agent credential": prodCred, "a join token": jt.Secret}
	for _, r := range ts.srv.apiRoutes() {
		if r.role == roleNone {
			continue
		}
		method, path, _ := strings.Cut(r.pattern, " ")
		path = fill.Replace(path)
		if strings.HasSuffix(r.pattern, api.PathLogs) || strings.HasSuffix(r.pattern, api.PathAgentLogs) {
			path += "?app=web&wait=1ms"
		}
		for name, token := range who {
			hdr := map[string]string{}
			if r.pattern == "POST "+api.PathArtifacts {
				hdr[api.SHA256Header], hdr[api.AppHeader] = web.SHA256, "web"
			}
			code, body := ts.raw(method, path, token, strings.NewReader(bodies[r.pattern]), hdr)
			may := slices.Contains(allowed[name], r.pattern)
			shown := body[:min(len(body), 200)]
			switch {
			case name == "revoked" && code != http.StatusUnauthorized:
				t.Errorf("%s as %s: %d, want 401", r.pattern, name, code)
			case may && (code == http.StatusUnauthorized || code == http.StatusForbidden):
				t.Errorf("%s as %s: %d %q, want it allowed", r.pattern, name, code, shown)
			case !may && code != http.StatusUnauthorized && code != http.StatusForbidden && code != http.StatusNotFound:
				t.Errorf("%s as %s: %d %q, want 401, 403 or 404", r.pattern, name, code, shown)
			}
			for what, s := range leaks {
				if strings.Contains(string(body), s) {
					t.Errorf("%s as %s: the answer holds %s", r.pattern, name, what)
				}
			}
		}
	}
	// Nothing the refused calls did stuck: the prod host is there, with
	// web at v1 and its secret.
	if d := ts.desired(prodCred, 0, 0); d.Doc.Apps["web"].Env["API_KEY"] != secret {
		t.Errorf("prod's host lost web or its secret: %+v", d.Doc.Apps)
	}
}
