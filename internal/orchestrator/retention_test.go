package orchestrator

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/internal/repo"
	"github.com/ferrydeploy/ferry/internal/state/bolt"
)

// TestPruneBoundsHistory: however long a busy group's history grows,
// Prune leaves the newest ended deployments of each app × group, every
// running one, the newest MinKeepDeployments however old, and the audit
// events within age and count.
func TestPruneBoundsHistory(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	r := repo.New(st)
	ctx := t.Context()
	now := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	mk := func(id, group string, state ferry.DeploymentState, age time.Duration) {
		t.Helper()
		d := repo.Deployment{Deployment: api.Deployment{ID: id, App: "web", Group: group, State: state, Started: now.Add(-age)}}
		if state != ferry.DeployRunning {
			d.Ended = d.Started.Add(time.Minute)
		}
		if err := r.CreateDeployment(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	// prod: a year and a half of one deployment a day, and one still
	// running from long ago (a canary waiting for its promotion).
	mk("waiting", "prod", ferry.DeployWaiting, 600*24*time.Hour)
	for i := range 540 {
		mk(fmt.Sprintf("p%03d", i), "prod", ferry.DeploySucceeded, time.Duration(i)*24*time.Hour)
	}
	// staging: a dozen, all older than the age limit.
	for i := range 12 {
		mk(fmt.Sprintf("s%03d", i), "staging", ferry.DeployFailed, time.Duration(500+i)*24*time.Hour)
	}
	for i := range 300 {
		ev := api.AuditEvent{Time: now.Add(-time.Duration(i) * 24 * time.Hour), Action: fmt.Sprint(i)}
		if err := r.AppendAudit(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	o := New(Config{Repo: r, Retention: Retention{Deployments: 200, DeploymentsFor: 400 * 24 * time.Hour, AuditFor: 200 * 24 * time.Hour, AuditEvents: 150}})
	for range 2 { // a second prune finds nothing more
		if err := o.Prune(ctx, now); err != nil {
			t.Fatal(err)
		}
	}
	prod, err := r.Deployments(ctx, "web", "prod")
	if err != nil {
		t.Fatal(err)
	}
	if len(prod) != 201 || prod[0].ID != "waiting" || prod[1].ID != "p199" || prod[200].ID != "p000" {
		t.Errorf("prod keeps %d deployments, oldest %s, %s; want the running one and p199…p000", len(prod), prod[0].ID, prod[1].ID)
	}
	staging, _ := r.Deployments(ctx, "web", "staging")
	if len(staging) != MinKeepDeployments || staging[0].ID != "s009" {
		t.Errorf("staging keeps %d deployments (oldest %s), want the newest %d however old", len(staging), staging[0].ID, MinKeepDeployments)
	}
	evs, _ := r.Audit(ctx, func(api.AuditEvent) bool { return true }, 0)
	if len(evs) != 150 || evs[0].Action != "149" {
		t.Errorf("audit keeps %d events (oldest %s), want the newest 150", len(evs), evs[0].Action)
	}
	if _, err := r.Deployment(ctx, "p300"); err == nil {
		t.Error("a pruned deployment is still found by its id")
	}
	// Age alone, with no count reached.
	o = New(Config{Repo: r, Retention: Retention{Deployments: 1000, DeploymentsFor: 100 * 24 * time.Hour, AuditFor: 30 * 24 * time.Hour, AuditEvents: 1000}})
	if err := o.Prune(ctx, now); err != nil {
		t.Fatal(err)
	}
	prod, _ = r.Deployments(ctx, "web", "prod")
	if len(prod) != 102 { // waiting, and p000…p100: p100 ended a minute after 100 days ago
		t.Errorf("prod keeps %d deployments after pruning by age, want 102", len(prod))
	}
	evs, _ = r.Audit(ctx, func(api.AuditEvent) bool { return true }, 0)
	if len(evs) != 31 { // 0…30 days old: the one exactly 30 days old is not older
		t.Errorf("audit keeps %d events after pruning by age, want 31", len(evs))
	}
}
