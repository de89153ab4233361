package server

import (
	"testing"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
)

// TestHostRolloutCarriesFailure: a host that fails a release has the
// agent's own account of it in its part of the deployment, typed, beside
// the sentence: the CLI and the UI show the failing step without parsing.
func TestHostRolloutCarriesFailure(t *testing.T) {
	ts := startServer(t, t.TempDir())
	bad := func(_, label string) string {
		if label == "v2" {
			return "web.1 exited with code 1"
		}
		return ""
	}
	ts.sim("web-1", ts.join("web-1", "prod"), bad)
	ts.publish("web", "1.0.0")
	var d api.Deployment
	ts.must(201, "POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "web", Group: "prod"}, &d)
	d = ts.waitDeployment(d.ID, "succeeded", func(d api.Deployment) bool { return d.State == ferry.DeploySucceeded })
	if hr := d.Hosts["web-1"]; hr.State != ferry.HostHealthy || hr.Failure != nil {
		t.Fatalf("web-1 after a healthy rollout: %+v", hr)
	}
	ts.publish("web", "2.0.0")
	ts.must(201, "POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "web", Group: "prod", Version: "2.0.0"}, &d)
	d = ts.waitDeployment(d.ID, "over", func(d api.Deployment) bool { return d.State.Ended() })
	hr := d.Hosts["web-1"]
	if d.State != ferry.DeployRolledBack || hr.State != ferry.HostFailed {
		t.Fatalf("deployment %s, web-1 %+v; want rolled-back with web-1 failed", d.State, hr)
	}
	if f := hr.Failure; f == nil || f.Kind != ferry.FailStart || f.Message != "web.1 exited with code 1" || f.Release != "v2-x" {
		t.Errorf("web-1's failure: %+v; want the agent's start failure of v2-x", f)
	}
	if hr.Error != "release v2: web.1 exited with code 1" {
		t.Errorf("web-1's error: %q", hr.Error)
	}
	var rels []api.Release
	ts.must(200, "GET", "/v1/apps/web/releases", ts.admin, nil, &rels)
	if len(rels) != 2 || rels[0].Outcome != ferry.OutcomeHealthy || rels[1].Outcome != ferry.OutcomeRolledBack {
		t.Errorf("releases: %+v", rels)
	}
}
