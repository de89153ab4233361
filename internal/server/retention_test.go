package server

import (
	"fmt"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/internal/orchestrator"
)

// TestDeploymentsPrunedAsTheyEnd: with --keep-deployments 2 a group
// deployed five times keeps its last two deployments, pruned as each one
// ends, not at the next hourly prune; and a rollback still finds its
// target among them.
func TestDeploymentsPrunedAsTheyEnd(t *testing.T) {
	ts := startServer(t, t.TempDir(), func(c *Config) { c.Retention = orchestrator.Retention{Deployments: 2} })
	ts.sim("web-1", ts.join("web-1", "prod"), nil)
	var ids []string
	for i := range 5 {
		ts.publish("web", fmt.Sprintf("1.0.%d", i))
		var d api.Deployment
		ts.must(201, "POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "web", Group: "prod", Version: fmt.Sprintf("1.0.%d", i)}, &d)
		ts.waitDeployment(d.ID, "succeeded", func(d api.Deployment) bool { return d.State == api.DeploySucceeded })
		ids = append(ids, d.ID)
	}
	// The last one is pruned for right after its end is recorded.
	var all []api.Deployment
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		ts.must(200, "GET", api.PathDeployments+"?app=web&group=prod", ts.admin, nil, &all)
		if len(all) <= 2 {
			break
		}
	}
	if len(all) != 2 || all[0].ID != ids[3] || all[1].ID != ids[4] {
		t.Fatalf("deployments kept: %+v; want the last two, %v", all, ids[3:])
	}
	if code, _ := ts.call("GET", "/v1/deployments/"+ids[0], ts.admin, nil, nil); code != 404 {
		t.Errorf("a pruned deployment: %d, want 404", code)
	}
	var rb api.Deployment
	ts.must(201, "POST", api.PathRollback, ts.admin, api.RollbackRequest{App: "web", Group: "prod"}, &rb)
	if rb.Release != all[0].Release {
		t.Errorf("rollback to %d, want %d", rb.Release, all[0].Release)
	}
}
