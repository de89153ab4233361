package server

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/internal/store"
	"github.com/ferrydeploy/ferry/internal/testenv"
)

func TestAuthMatrix(t *testing.T) {
	ts := startServer(t, t.TempDir())
	ts.publish("web", "1.0.0")
	ts.publish("api", "1.0.0")
	cred := ts.join("web-1", "prod")
	viewer := ts.token(api.TokenRequest{Name: "v", Role: api.RoleViewer})
	deployer := ts.token(api.TokenRequest{Name: "d", Role: api.RoleDeployer, Apps: []string{"api"}})
	revoked := ts.token(api.TokenRequest{Name: "r", Role: api.RoleAdmin})
	expired := ts.token(api.TokenRequest{Name: "e", Role: api.RoleAdmin, TTL: time.Millisecond})
	var toks []api.Token
	ts.must(http.StatusOK, "GET", api.PathTokens, ts.admin, nil, &toks)
	for _, tk := range toks {
		if tk.Name == "r" {
			ts.must(http.StatusNoContent, "DELETE", "/v1/tokens/"+tk.ID, ts.admin, nil, nil)
		}
	}
	testenv.WaitFor(t, "the 1ms token to expire", 10*time.Second, func() bool {
		code, _ := ts.call("GET", api.PathStatus, expired, nil, nil)
		return code == http.StatusUnauthorized
	})

	deployWeb := api.DeployRequest{App: "web", Group: "prod", WaitLock: 0}
	for _, tt := range []struct {
		name, method, path, token string
		body                      any
		want                      int
	}{
		{"no token", "GET", api.PathStatus, "", nil, 401},
		{"garbage token", "GET", api.PathStatus, "ferry_nope", nil, 401},
		{"wrong secret", "GET", api.PathStatus, cred[:len(cred)-4] + "0000", nil, 401},
		{"revoked", "GET", api.PathStatus, revoked, nil, 401},
		{"expired", "GET", api.PathStatus, expired, nil, 401},
		{"viewer reads status", "GET", api.PathStatus, viewer, nil, 200},
		{"viewer may not deploy", "POST", api.PathDeployments, viewer, deployWeb, 403},
		{"viewer may not list tokens", "GET", api.PathTokens, viewer, nil, 403},
		{"deployer scoped to api may not deploy web", "POST", api.PathDeployments, deployer, deployWeb, 403},
		{"deployer may not make tokens", "POST", api.PathTokens, deployer, api.TokenRequest{Name: "x", Role: api.RoleAdmin}, 403},
		{"agent may not read status", "GET", api.PathStatus, cred, nil, 403},
		{"agent may not deploy", "POST", api.PathDeployments, cred, deployWeb, 403},
		{"agent reads its desired state", "GET", api.PathDesired, cred, nil, 200},
		{"admin may not read desired state", "GET", api.PathDesired, ts.admin, nil, 403},
		{"join token is no bearer token", "GET", api.PathStatus, "", nil, 401},
		{"unknown group", "POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "web", Group: "nope"}, 404},
		{"unknown app", "POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "nope", Group: "prod"}, 404},
		{"unknown release", "POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "web", Group: "prod", Release: 9}, 404},
		{"bad strategy", "POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "web", Group: "prod", Strategy: "yolo"}, 400},
		{"unknown path", "GET", "/v1/nope", ts.admin, nil, 404},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if code, msg := ts.call(tt.method, tt.path, tt.token, tt.body, nil); code != tt.want {
				t.Errorf("%s %s: %d (%s), want %d", tt.method, tt.path, code, msg, tt.want)
			}
		})
	}
	code, _ := ts.send("POST", api.PathDeployments, ts.admin, strings.NewReader("{not json"), nil, nil)
	if code != 400 {
		t.Errorf("malformed body: %d, want 400", code)
	}
	var evs []api.AuditEvent
	ts.must(200, "GET", api.PathAudit, ts.admin, nil, &evs)
	if len(evs) == 0 || !strings.Contains(evs[len(evs)-1].Action, "token") && !strings.Contains(evs[len(evs)-1].Action, "join") {
		t.Errorf("audit: %+v", evs)
	}
}

func TestUploadChecksum(t *testing.T) {
	ts := startServer(t, t.TempDir())
	path, sum := buildApp(t, "web", "1.0.0")
	b, _ := os.ReadFile(path)
	wrong := strings.Repeat("0", 64)
	hdr := func(sum, app string) map[string]string {
		return map[string]string{api.SHA256Header: sum, api.AppHeader: app}
	}
	code, msg := ts.send("POST", api.PathArtifacts, ts.admin, bytes.NewReader(b), hdr(wrong, "web"), nil)
	if code != 400 || !strings.Contains(msg, "checksum mismatch") {
		t.Fatalf("mismatch: %d %s", code, msg)
	}
	if keys, _ := ts.srv.blobs.List(context.Background(), ""); len(keys) != 0 {
		t.Fatalf("a rejected upload left %v", keys)
	}
	if code, _ := ts.send("HEAD", "/v1/artifacts/"+wrong, ts.admin, nil, nil, nil); code != 404 {
		t.Fatalf("HEAD after mismatch: %d", code)
	}
	// The app comes before the bytes, and must be the artifact's own.
	code, msg = ts.send("POST", api.PathArtifacts, ts.admin, bytes.NewReader(b), map[string]string{api.SHA256Header: sum}, nil)
	if code != 400 || !strings.Contains(msg, api.AppHeader) {
		t.Fatalf("no app: %d %s", code, msg)
	}
	code, msg = ts.send("POST", api.PathArtifacts, ts.admin, bytes.NewReader(b), hdr(sum, "other"), nil)
	if code != 400 || !strings.Contains(msg, "web's") {
		t.Fatalf("wrong app: %d %s", code, msg)
	}
	if keys, _ := ts.srv.blobs.List(context.Background(), ""); len(keys) != 0 {
		t.Fatalf("an upload under the wrong app left %v", keys)
	}
	var a api.Artifact
	code, msg = ts.send("POST", api.PathArtifacts, ts.admin, bytes.NewReader(b), hdr(sum, "web"), &a)
	if code != 201 || a.App != "web" || a.Version != "1.0.0" || a.Existed {
		t.Fatalf("upload: %d %s %+v", code, msg, a)
	}
	if keys, _ := ts.srv.blobs.List(context.Background(), ""); !slices.Equal(keys, []string{"artifacts/web/" + sum + ".tar.zst"}) {
		t.Fatalf("stored as %v, want artifacts/web/<sha256>.tar.zst", keys)
	}
	code, _ = ts.send("POST", api.PathArtifacts, ts.admin, bytes.NewReader(b), hdr(sum, "web"), &a)
	if code != 200 || !a.Existed {
		t.Fatalf("second upload: %d %+v", code, a)
	}
	// A resumed download asks for the rest.
	var part bytes.Buffer
	req, _ := http.NewRequest("GET", ts.srv.URL()+"/v1/artifacts/"+sum, nil)
	req.Header.Set("Authorization", "Bearer "+ts.admin)
	req.Header.Set("Range", "bytes=10-")
	resp, err := ts.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	part.ReadFrom(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 206 || !bytes.Equal(part.Bytes(), b[10:]) {
		t.Fatalf("range: %d, %d bytes, want %d", resp.StatusCode, part.Len(), len(b)-10)
	}
	// Garbage with the right digest is no artifact.
	junk := []byte("not an artifact")
	code, msg = ts.send("POST", api.PathArtifacts, ts.admin, bytes.NewReader(junk), hdr(sha(junk), "hello"), nil)
	if code != 400 {
		t.Fatalf("junk: %d %s", code, msg)
	}
	if _, err := ts.srv.blobs.Stat(context.Background(), store.ArtifactKey("hello", sha(junk))); err == nil {
		t.Fatal("junk stayed in the store")
	}
}

func TestRollingDeployInBatches(t *testing.T) {
	ts := startServer(t, t.TempDir())
	hosts := []string{"web-1", "web-2", "web-3", "web-4"}
	creds := map[string]string{}
	for _, h := range hosts {
		creds[h] = ts.join(h, "prod")
	}
	art := ts.publish("web", "1.0.0")
	var d api.Deployment
	ts.must(201, "POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "web", Group: "prod", Batch: "2", HealthTimeout: 20 * time.Second}, &d)
	if d.Release != 1 || d.Hosts["web-3"].Batch != 1 {
		t.Fatalf("deployment: %+v", d)
	}
	// Batch 0 has the release; batch 1 not yet.
	ts.waitDesired(creds["web-1"], "web", "v1")
	ts.waitDesired(creds["web-2"], "web", "v1")
	for _, h := range hosts {
		doc := ts.desired(creds[h], 0, 0).Doc
		app, ok := doc.Apps["web"]
		if first := h <= "web-2"; ok != first {
			t.Fatalf("%s desired before batch 0 is healthy: %+v", h, doc)
		}
		if ok && (app.Release != "v1" || app.SHA256 != art.SHA256 || app.Artifact != ts.srv.URL()+"/v1/artifacts/"+art.SHA256) {
			t.Fatalf("%s: %+v", h, app)
		}
	}
	d3 := ts.desired(creds["web-3"], 0, 0)
	ts.report(creds["web-1"], "web-1", "web", "v1", "running", "")
	ts.report(creds["web-2"], "web-2", "web", "v1", "installing", "")
	if got := ts.desired(creds["web-3"], d3.Index, 300*time.Millisecond); len(got.Doc.Apps) != 0 {
		t.Fatal("batch 1 started while web-2 was installing")
	}
	ts.report(creds["web-2"], "web-2", "web", "v1", "running", "")
	if got := ts.desired(creds["web-3"], d3.Index, 10*time.Second); got.Doc.Apps["web"].Release != "v1" {
		t.Fatalf("batch 1 did not start: %+v", got)
	}
	// The agent credential fetches the artifact its desired state names.
	if code, _ := ts.send("HEAD", "/v1/artifacts/"+art.SHA256, creds["web-3"], nil, nil, nil); code != 200 {
		t.Fatalf("agent HEAD artifact: %d", code)
	}
	var locks []api.Lock
	ts.must(200, "GET", api.PathLocks, ts.admin, nil, &locks)
	if len(locks) != 1 || locks[0].App != "web" {
		t.Fatalf("locks during rollout: %+v", locks)
	}
	ts.report(creds["web-3"], "web-3", "web", "v1", "running", "")
	ts.report(creds["web-4"], "web-4", "web", "v1", "running", "")
	d = ts.waitDeployment(d.ID, "succeeded", func(d api.Deployment) bool { return d.State == api.DeploySucceeded })
	for h, hr := range d.Hosts {
		if hr.State != "healthy" {
			t.Errorf("%s: %+v", h, hr)
		}
	}
	ts.must(200, "GET", api.PathLocks, ts.admin, nil, &locks)
	if len(locks) != 0 {
		t.Fatalf("lock not freed: %+v", locks)
	}
	// A host that joins later converges to the group's release.
	late := ts.join("web-5", "prod")
	if got := ts.desired(late, 0, 0); got.Doc.Apps["web"].Release != "v1" {
		t.Fatalf("late host: %+v", got)
	}
	var rels []api.Release
	ts.must(200, "GET", "/v1/apps/web/releases", ts.admin, nil, &rels)
	if len(rels) != 1 || rels[0].Outcome != "healthy" || rels[0].Version != "1.0.0" {
		t.Fatalf("releases: %+v", rels)
	}
	var apps []api.App
	ts.must(200, "GET", api.PathApps, ts.admin, nil, &apps)
	if len(apps) != 1 || apps[0].Groups[0].Release != 1 {
		t.Fatalf("apps: %+v", apps)
	}
	var st api.Status
	ts.must(200, "GET", api.PathStatus, ts.admin, nil, &st)
	if len(st.Hosts) != 5 || st.Hosts[0].Apps["web"].Label != "v1" || st.Hosts[0].Lost {
		t.Fatalf("status: %+v", st)
	}
}

func TestFailureRollsBack(t *testing.T) {
	ts := startServer(t, t.TempDir())
	bad := func(_, label string) string {
		if label == "v2" {
			return "web.1 is crash-looping: exited with code 1"
		}
		return ""
	}
	for _, h := range []string{"web-1", "web-2", "web-3"} {
		ts.sim(h, ts.join(h, "prod"), bad)
	}
	ts.publish("web", "1.0.0")
	var d1 api.Deployment
	ts.must(201, "POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "web", Group: "prod", Strategy: "all"}, &d1)
	ts.waitDeployment(d1.ID, "succeeded", func(d api.Deployment) bool { return d.State == api.DeploySucceeded })

	ts.publish("web", "2.0.0")
	var d2 api.Deployment
	ts.must(201, "POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "web", Group: "prod", Version: "2.0.0", Batch: "1"}, &d2)
	d2 = ts.waitDeployment(d2.ID, "rolled back", func(d api.Deployment) bool { return d.State != api.DeployRunning })
	want := "web-1: release v2: web.1 is crash-looping: exited with code 1"
	if d2.State != api.DeployRolledBack || !strings.Contains(d2.Error, want) {
		t.Fatalf("deployment: state %s error %q, want rolled-back with %q", d2.State, d2.Error, want)
	}
	if d2.Hosts["web-2"].State != "pending" || d2.Hosts["web-1"].State != "failed" {
		t.Fatalf("hosts: %+v", d2.Hosts)
	}
	var all []api.Deployment
	ts.must(200, "GET", api.PathDeployments+"?app=web&group=prod", ts.admin, nil, &all)
	if len(all) != 3 || all[2].RollbackOf != d2.ID || all[2].Release != 1 || all[2].State != api.DeploySucceeded {
		t.Fatalf("deployments: %+v", all)
	}
	var rels []api.Release
	ts.must(200, "GET", "/v1/apps/web/releases", ts.admin, nil, &rels)
	if rels[1].Outcome != "rolled-back" {
		t.Fatalf("releases: %+v", rels)
	}
	var locks []api.Lock
	ts.must(200, "GET", api.PathLocks, ts.admin, nil, &locks)
	if len(locks) != 0 {
		t.Fatalf("lock not freed: %+v", locks)
	}
}

func TestLockHeld(t *testing.T) {
	ts := startServer(t, t.TempDir())
	cred := ts.join("web-1", "prod")
	ts.publish("web", "1.0.0")
	var d api.Deployment
	ts.must(201, "POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "web", Group: "prod"}, &d)
	code, msg := ts.call("POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "web", Group: "prod"}, nil)
	if code != http.StatusConflict || !strings.Contains(msg, "locked by admin since ") || !strings.Contains(msg, "for deploy v1 (deployment "+d.ID+")") {
		t.Fatalf("second deploy: %d %q", code, msg)
	}
	// A refused deploy of a new build makes no release.
	ts.publish("web", "2.0.0")
	if code, msg := ts.call("POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "web", Group: "prod", Version: "2.0.0"}, nil); code != http.StatusConflict {
		t.Fatalf("deploy of 2.0.0 while locked: %d %q", code, msg)
	}
	var rels []api.Release
	ts.must(200, "GET", "/v1/apps/web/releases", ts.admin, nil, &rels)
	if len(rels) != 1 {
		t.Fatalf("releases after a refused deploy: %+v", rels)
	}
	// WaitLock waits for the first to end.
	done := make(chan int, 1)
	go func() {
		code, _ := ts.call("POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "web", Group: "prod", WaitLock: 10 * time.Second}, nil)
		done <- code
	}()
	testenv.WaitFor(t, "the deploy with wait-lock to wait for the lock", 10*time.Second, func() bool {
		return len(done) > 0 || testenv.BlockedIn("github.com/ferrydeploy/ferry/internal/orchestrator.(*Orchestrator).acquireLock")
	})
	ts.report(cred, "web-1", "web", "v1", "running", "")
	if code := <-done; code != http.StatusCreated {
		t.Fatalf("deploy with wait-lock: %d", code)
	}
}

func TestBlockingDesiredWakesOnDeploy(t *testing.T) {
	ts := startServer(t, t.TempDir())
	cred := ts.join("web-1", "prod")
	ts.publish("web", "1.0.0")
	first := ts.desired(cred, 0, 0)
	got := make(chan time.Time, 1)
	go func() {
		d := ts.desired(cred, first.Index, time.Minute)
		if d.Doc.Apps["web"].Release == "v1" {
			got <- time.Now()
		}
		close(got)
	}()
	ts.waitBlocked("web-1")
	ts.must(201, "POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "web", Group: "prod"}, nil)
	deployed := time.Now()
	select {
	case at, ok := <-got:
		if !ok {
			t.Fatal("blocking query answered without the release")
		}
		if lag := at.Sub(deployed); lag > 100*time.Millisecond {
			t.Fatalf("blocking query answered %v after the deploy", lag)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("blocking query did not answer")
	}
}

func TestRestartResumesRollout(t *testing.T) {
	data := t.TempDir()
	ts := startServer(t, data)
	c1, c2 := ts.join("web-1", "prod"), ts.join("web-2", "prod")
	ts.publish("web", "1.0.0")
	var d api.Deployment
	ts.must(201, "POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "web", Group: "prod", Batch: "1", HealthTimeout: 30 * time.Second}, &d)
	idx1 := ts.waitDesired(c1, "web", "v1").Index
	ts.report(c1, "web-1", "web", "v1", "running", "")
	ts.waitDeployment(d.ID, "on batch 1", func(d api.Deployment) bool { return d.Hosts["web-2"].State == "deploying" })
	ts.stop()

	ts2 := startServer(t, data)
	if ts2.srv.AdminToken() != "" {
		t.Fatal("admin token made again")
	}
	ts2.admin = ts.admin
	// Agents report every few seconds; a resumed rollout counts only
	// reports made after it asked, so keep reporting as agents do.
	ts2.sim("web-1", c1, nil)
	ts2.sim("web-2", c2, nil)
	ts2.waitDeployment(d.ID, "succeeded", func(d api.Deployment) bool { return d.State == api.DeploySucceeded })
	if idx := ts2.desired(c1, 0, 0).Index; idx != idx1 {
		t.Fatalf("web-1's desired state was written again: index %d, was %d", idx, idx1)
	}
	var locks []api.Lock
	ts2.must(200, "GET", api.PathLocks, ts2.admin, nil, &locks)
	if len(locks) != 0 {
		t.Fatalf("lock left: %+v", locks)
	}
}

func TestHostLost(t *testing.T) {
	ts := startServer(t, t.TempDir(), func(c *Config) { c.HostLostAfter = 300 * time.Millisecond })
	ts.join("web-1", "prod")
	ts.publish("web", "1.0.0")
	var d api.Deployment
	ts.must(201, "POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "web", Group: "prod", HealthTimeout: 30 * time.Second, NoAutoRollback: true}, &d)
	d = ts.waitDeployment(d.ID, "failed", func(d api.Deployment) bool { return d.State != api.DeployRunning })
	if d.State != api.DeployFailed || !strings.Contains(d.Error, "web-1: host lost") {
		t.Fatalf("deployment: %s %q", d.State, d.Error)
	}
	var st api.Status
	ts.must(200, "GET", api.PathStatus, ts.admin, nil, &st)
	if !st.Hosts[0].Lost {
		t.Fatalf("status: %+v", st)
	}
}

func TestCanaryPromote(t *testing.T) {
	ts := startServer(t, t.TempDir())
	for _, h := range []string{"web-1", "web-2", "web-3"} {
		ts.sim(h, ts.join(h, "prod"), nil)
	}
	ts.publish("web", "1.0.0")
	var d api.Deployment
	ts.must(201, "POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "web", Group: "prod", Strategy: "canary", Canary: 1}, &d)
	d = ts.waitDeployment(d.ID, "waiting", func(d api.Deployment) bool { return d.State == api.DeployWaiting })
	if d.Hosts["web-1"].State != "healthy" || d.Hosts["web-2"].State != "pending" {
		t.Fatalf("canary: %+v", d.Hosts)
	}
	ts.must(200, "POST", "/v1/deployments/"+d.ID+"/promote", ts.admin, nil, nil)
	ts.waitDeployment(d.ID, "succeeded", func(d api.Deployment) bool { return d.State == api.DeploySucceeded })

	// ferry rollback goes back to the last release healthy everywhere.
	ts.publish("web", "2.0.0")
	var d2 api.Deployment
	ts.must(201, "POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "web", Group: "prod", Version: "2.0.0", Strategy: "all"}, &d2)
	ts.waitDeployment(d2.ID, "succeeded", func(d api.Deployment) bool { return d.State == api.DeploySucceeded })
	// A dry run names the target and starts nothing (the rollback below
	// is still of d2).
	var plan api.Deployment
	ts.must(200, "POST", api.PathRollback, ts.admin, api.RollbackRequest{App: "web", Group: "prod", DryRun: true}, &plan)
	if plan.Release != 1 || plan.From != d2.Release || plan.ID != "" {
		t.Fatalf("rollback dry run: %+v; want release 1 from %d, no deployment", plan, d2.Release)
	}
	var rb api.Deployment
	ts.must(201, "POST", api.PathRollback, ts.admin, api.RollbackRequest{App: "web", Group: "prod"}, &rb)
	if rb.Release != 1 || rb.RollbackOf != d2.ID {
		t.Fatalf("rollback: %+v", rb)
	}
	ts.waitDeployment(rb.ID, "succeeded", func(d api.Deployment) bool { return d.State == api.DeploySucceeded })
}

// TestAppDeployPolicy: the release's ferry.yaml `deploy:` section fills
// what the request leaves out; the request wins over it.
func TestAppDeployPolicy(t *testing.T) {
	ts := startServer(t, t.TempDir())
	ts.sim("web-1", ts.join("web-1", "prod"), nil)
	ts.publishWith("web", "1.0.0", "deploy: {strategy: all, health_timeout: 7s, auto_rollback: false}\n")
	var d api.Deployment
	ts.must(201, "POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "web", Group: "prod"}, &d)
	if d.Strategy != api.StrategyAll || d.HealthTimeout != 7*time.Second || d.AutoRollback {
		t.Errorf("deployment %s, %v, auto-rollback %v: want ferry.yaml's all, 7s, false", d.Strategy, d.HealthTimeout, d.AutoRollback)
	}
	ts.waitDeployment(d.ID, "succeeded", func(d api.Deployment) bool { return d.State == api.DeploySucceeded })
	var d2 api.Deployment
	ts.must(201, "POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "web", Group: "prod", Strategy: api.StrategyRolling, Batch: "1", WaitLock: 10 * time.Second}, &d2)
	if d2.Strategy != api.StrategyRolling || d2.Batch != "1" {
		t.Errorf("the request's strategy did not win: %s %s", d2.Strategy, d2.Batch)
	}
}

// TestStaleReportDoesNotPass: a host whose agent died keeps its last
// report, which may show the very release a new rollout asks for; only a
// report made after the rollout asked counts.
func TestStaleReportDoesNotPass(t *testing.T) {
	ts := startServer(t, t.TempDir(), func(c *Config) { c.HostLostAfter = 500 * time.Millisecond })
	sim := ts.sim("web-1", ts.join("web-1", "prod"), nil)
	ts.publish("web", "1.0.0")
	var d api.Deployment
	ts.must(201, "POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "web", Group: "prod"}, &d)
	ts.waitDeployment(d.ID, "succeeded", func(d api.Deployment) bool { return d.State == api.DeploySucceeded })
	sim.close() // the agent dies; its last report says v1 runs healthy
	var d2 api.Deployment
	ts.must(201, "POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "web", Group: "prod", Release: 1, NoAutoRollback: true, WaitLock: 10 * time.Second}, &d2)
	d2 = ts.waitDeployment(d2.ID, "ended", func(d api.Deployment) bool { return d.State != api.DeployRunning })
	if d2.State != api.DeployFailed || !strings.Contains(d2.Error, "host lost") {
		t.Fatalf("redeploy to a dead host: %s %q, want failed with host lost", d2.State, d2.Error)
	}
}

// TestArtifactKeys: artifacts a server before artifacts/<app>/ wrote at
// sha256/<hex> are still served, and bytes under an artifact's key that
// are not what the key says are replaced by the next publish, not trusted.
func TestArtifactKeys(t *testing.T) {
	ts := startServer(t, t.TempDir())
	ctx := context.Background()
	a := ts.publish("web", "1.0.0")
	b, err := readAllBlob(ctx, ts, store.ArtifactKey("web", a.SHA256))
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.srv.blobs.Put(ctx, store.LegacyKey(a.SHA256), bytes.NewReader(b), int64(len(b))); err != nil {
		t.Fatal(err)
	}
	if err := ts.srv.blobs.Delete(ctx, store.ArtifactKey("web", a.SHA256)); err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	code, msg := ts.send("GET", "/v1/artifacts/"+a.SHA256, ts.admin, nil, nil, nil)
	if code != 200 {
		t.Fatalf("GET of a legacy-key artifact: %d %s", code, msg)
	}
	req, _ := http.NewRequest("GET", ts.srv.URL()+"/v1/artifacts/"+a.SHA256, nil)
	req.Header.Set("Authorization", "Bearer "+ts.admin)
	resp, err := ts.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got.ReadFrom(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(got.Bytes(), b) {
		t.Fatalf("legacy-key download: %d bytes, want the %d stored", got.Len(), len(b))
	}
	cred := ts.join("web-1", "prod")
	ts.must(201, "POST", "/v1/deployments", ts.admin, api.DeployRequest{App: "web", Group: "prod", SHA256: a.SHA256}, nil)
	ts.waitDesired(cred, "web", "v1")

	// Corrupt bytes under the key of an artifact never published here.
	path, sum := buildApp(t, "api", "2.0.0")
	good, _ := os.ReadFile(path)
	bad := slices.Clone(good)
	bad[len(bad)/2] ^= 1
	if err := ts.srv.blobs.Put(ctx, store.ArtifactKey("api", sum), bytes.NewReader(bad), int64(len(bad))); err != nil {
		t.Fatal(err)
	}
	var rec api.Artifact
	code, msg = ts.send("POST", api.PathArtifacts, ts.admin, bytes.NewReader(good), map[string]string{api.SHA256Header: sum, api.AppHeader: "api"}, &rec)
	if code != 201 || rec.Existed {
		t.Fatalf("publish over corrupt bytes: %d %s %+v", code, msg, rec)
	}
	if err := store.Verify(ctx, ts.srv.blobs, store.ArtifactKey("api", sum), sum); err != nil {
		t.Fatalf("after publish: %v", err)
	}
}

func readAllBlob(ctx context.Context, ts *testServer, key string) ([]byte, error) {
	rc, _, err := ts.srv.blobs.Open(ctx, key, 0)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var buf bytes.Buffer
	_, err = buf.ReadFrom(rc)
	return buf.Bytes(), err
}
