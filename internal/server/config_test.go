package server

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/internal/state/bolt"
)

// TestConfigAndSecrets: revisions with inheritance and overrides, masked
// secrets that only the group's agents get in clear, encrypted at rest,
// config-only deploys, rollback to the old config, diff and history that
// never show a secret, and who may change what.
func TestConfigAndSecrets(t *testing.T) {
	data := t.TempDir()
	ts := startServer(t, data)
	prodCred := ts.join("web-1", "prod")
	stagingCred := ts.join("web-2", "staging")
	for h, cred := range map[string]string{"web-1": prodCred, "web-2": stagingCred} {
		ts.sim(h, cred, nil)
	}
	ts.publish("web", "1.0.0")
	const secret = "s3cr3t-api-key-for-prod"

	change := func(ch api.ConfigChange) api.ConfigRevision {
		t.Helper()
		var rev api.ConfigRevision
		ts.must(http.StatusOK, "PATCH", "/v1/apps/web/config", ts.admin, ch, &rev)
		return rev
	}
	change(api.ConfigChange{Set: map[string]string{"LOG_LEVEL": "info", "REGION": "eu"}})
	change(api.ConfigChange{Group: "prod", Set: map[string]string{"LOG_LEVEL": "warn"}})
	r3 := change(api.ConfigChange{Group: "prod", Set: map[string]string{"API_KEY": secret}, Secret: true})
	if r3.Rev != 3 || !r3.Secret || strings.Join(r3.Set, ",") != "API_KEY" {
		t.Fatalf("third change: %+v", r3)
	}

	// The prod view: inherited, overridden, masked.
	var cfg api.Config
	ts.must(http.StatusOK, "GET", "/v1/apps/web/config?group=prod", ts.admin, nil, &cfg)
	got := map[string]api.ConfigVar{}
	for _, v := range cfg.Vars {
		got[v.Key] = v
	}
	if got["LOG_LEVEL"].Value != "warn" || got["LOG_LEVEL"].Scope != "prod" || got["REGION"].Scope != api.ScopeApp ||
		got["API_KEY"].Value != api.Masked || !got["API_KEY"].Secret || cfg.Rev != 3 {
		t.Fatalf("prod's config: %+v", cfg)
	}

	// Deploy to both groups: a release made at config r3.
	var d api.Deployment
	ts.must(http.StatusCreated, "POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "web", Group: "prod", Strategy: "all"}, &d)
	ts.waitDeployment(d.ID, "succeeded", func(d api.Deployment) bool { return d.State == api.DeploySucceeded })
	ts.must(http.StatusCreated, "POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "web", Group: "staging", Strategy: "all"}, &d)
	ts.waitDeployment(d.ID, "succeeded", func(d api.Deployment) bool { return d.State == api.DeploySucceeded })
	prod := ts.waitDesired(prodCred, "web", "v1").Doc.Apps["web"]
	staging := ts.waitDesired(stagingCred, "web", "v1").Doc.Apps["web"]
	if prod.Env["API_KEY"] != secret || prod.Env["LOG_LEVEL"] != "warn" || prod.Env["REGION"] != "eu" || prod.Group != "prod" {
		t.Fatalf("prod agent's desired app: %+v", prod)
	}
	if _, ok := staging.Env["API_KEY"]; ok || staging.Env["LOG_LEVEL"] != "info" {
		t.Fatalf("staging agent's desired app: %+v (a prod secret must not reach it)", staging)
	}

	// A config change alone deploys as a new release of the same artifact.
	change(api.ConfigChange{Group: "prod", Set: map[string]string{"LOG_LEVEL": "debug"}})
	ts.must(http.StatusCreated, "POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "web", Group: "prod", Strategy: "all"}, &d)
	ts.waitDeployment(d.ID, "succeeded", func(d api.Deployment) bool { return d.State == api.DeploySucceeded })
	if d.Release != 2 {
		t.Fatalf("a config-only deploy made release v%d, want v2", d.Release)
	}
	if env := ts.waitDesired(prodCred, "web", "v2").Doc.Apps["web"].Env; env["LOG_LEVEL"] != "debug" {
		t.Fatalf("v2's env: %v", env)
	}
	var rels []api.Release
	ts.must(http.StatusOK, "GET", "/v1/apps/web/releases", ts.admin, nil, &rels)
	byNum := map[int]api.Release{}
	for _, r := range rels {
		byNum[r.Number] = r
	}
	if byNum[1].ConfigRev != 3 || byNum[2].ConfigRev != 4 || byNum[1].SHA256 != byNum[2].SHA256 {
		t.Fatalf("releases: %+v", rels)
	}
	// Rolling back brings back v1's config.
	var rb api.Deployment
	ts.must(http.StatusCreated, "POST", api.PathRollback, ts.admin, api.RollbackRequest{App: "web", Group: "prod", Release: 1}, &rb)
	ts.waitDeployment(rb.ID, "succeeded", func(d api.Deployment) bool { return d.State == api.DeploySucceeded })
	if env := ts.waitDesired(prodCred, "web", "v1").Doc.Apps["web"].Env; env["LOG_LEVEL"] != "warn" {
		t.Fatalf("after the rollback to v1 prod's env is %v", env)
	}

	// Diff and history say that the secret changed, never what it is.
	change(api.ConfigChange{Group: "prod", Set: map[string]string{"API_KEY": "rotated-" + secret}, Secret: true})
	var diff []api.ConfigDiff
	ts.must(http.StatusOK, "GET", "/v1/apps/web/config/diff?from=3&to=5", ts.admin, nil, &diff)
	var changed []string
	for _, x := range diff {
		changed = append(changed, x.Key+":"+x.Change)
		if x.Key == "API_KEY" && (x.Old != api.Masked || x.New != api.Masked) {
			t.Errorf("diff shows the secret: %+v", x)
		}
	}
	if strings.Join(changed, " ") != "API_KEY:changed LOG_LEVEL:changed" {
		t.Errorf("diff r3..r5: %v", changed)
	}
	var hist []api.ConfigRevision
	ts.must(http.StatusOK, "GET", "/v1/apps/web/config/history", ts.admin, nil, &hist)
	if len(hist) != 5 || hist[0].Rev != 5 || hist[0].By == "" {
		t.Errorf("history: %+v", hist)
	}

	// Who may change what.
	viewer := ts.token(api.TokenRequest{Name: "v", Role: api.RoleViewer})
	other := ts.token(api.TokenRequest{Name: "o", Role: api.RoleDeployer, Apps: []string{"api"}})
	for name, tok := range map[string]string{"viewer": viewer, "deployer of another app": other, "an agent": prodCred} {
		if code, _ := ts.call("PATCH", "/v1/apps/web/config", tok, api.ConfigChange{Set: map[string]string{"X": "1"}}, nil); code != http.StatusForbidden {
			t.Errorf("%s setting config: %d, want 403", name, code)
		}
	}
	for _, bad := range []api.ConfigChange{
		{Set: map[string]string{"1BAD": "x"}},
		{Set: map[string]string{"PORT": "80"}},
		{Set: map[string]string{"FERRY_APP": "x"}},
		{},
	} {
		if code, _ := ts.call("PATCH", "/v1/apps/web/config", ts.admin, bad, nil); code != http.StatusBadRequest {
			t.Errorf("config change %+v: %d, want 400", bad, code)
		}
	}
	if code, msg := ts.call("PATCH", "/v1/apps/web/config", ts.admin, api.ConfigChange{Group: "prod", Unset: []string{"NOPE"}}, nil); code != http.StatusNotFound || !strings.Contains(msg, "NOPE is not set in group prod") {
		t.Errorf("unset of a missing key: %d %s", code, msg)
	}

	// The secret is in no API answer but the agent's, and not at rest.
	for _, path := range []string{"/v1/apps/web/config", "/v1/apps/web/config?group=prod", "/v1/apps/web/config/history", "/v1/audit", "/v1/apps/web/releases"} {
		var raw json.RawMessage
		code, _ := ts.send("GET", path, ts.admin, nil, nil, &raw)
		if code != http.StatusOK || bytes.Contains(raw, []byte(secret)) {
			t.Errorf("GET %s: %d; holds the secret: %v", path, code, bytes.Contains(raw, []byte(secret)))
		}
	}
	ts.stop()
	db, err := os.ReadFile(filepath.Join(data, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(db, []byte(secret)) {
		t.Error("state.db holds the secret in clear")
	}
	if fi, err := os.Stat(filepath.Join(data, SecretsKeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("secrets.key: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
}

// TestSecretsKeyMustMatch: servers sharing one state must share the
// secrets key; one with another key refuses to start and says what to do.
func TestSecretsKeyMustMatch(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	shared := func(c *Config) { c.State = st }
	first := t.TempDir()
	startServer(t, first, shared).stop()
	second := t.TempDir()
	_, err = newServer(t, Config{Data: second, Listen: "127.0.0.1:0", State: st})
	if err == nil || !strings.Contains(err.Error(), "copy secrets.key from the first server") {
		t.Fatalf("a server with another secrets key: %v", err)
	}
	b, _ := os.ReadFile(filepath.Join(first, SecretsKeyFile))
	os.WriteFile(filepath.Join(second, SecretsKeyFile), b, 0o600)
	srv, err := newServer(t, Config{Data: second, Listen: "127.0.0.1:0", State: st})
	if err != nil {
		t.Fatalf("a server with the same key: %v", err)
	}
	srv.close()
}
