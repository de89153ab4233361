package repo_test

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/internal/repo"
	"github.com/ferrydeploy/ferry/internal/state"
	"github.com/ferrydeploy/ferry/internal/state/bolt"
	"github.com/ferrydeploy/ferry/internal/state/etcd"
	"github.com/ferrydeploy/ferry/internal/state/etcd/etcdtest"
)

// The repository's suite runs on both state stores: what it relies on
// (compare-and-swap of many keys, prefix listing, watches) must mean the
// same on each.
func TestBolt(t *testing.T) {
	suite(t, func(t *testing.T) state.Store {
		st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), bolt.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	})
}

func TestEtcd(t *testing.T) {
	c := etcdtest.Start(t, 1)
	var n atomic.Int64
	suite(t, func(t *testing.T) state.Store {
		st, err := etcd.Open(t.Context(), etcd.Options{Endpoints: c.Endpoints(), Prefix: fmt.Sprintf("/repo/%d/", n.Add(1))})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	})
}

func suite(t *testing.T, open func(t *testing.T) state.Store) {
	tests := []struct {
		name string
		fn   func(*testing.T, *repo.Repo)
	}{
		{"Hosts", testHosts},
		{"GroupIndexStale", testGroupIndexStale},
		{"Reports", testReports},
		{"Desired", testDesired},
		{"Deployments", testDeployments},
		{"DeploymentWait", testDeploymentWait},
		{"Releases", testReleases},
		{"Locks", testLocks},
		{"Audit", testAudit},
		{"Upgrade", testUpgrade},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, repo.New(open(t))) })
	}
}

func names(hs []repo.Host) []string {
	out := []string{}
	for _, h := range hs {
		out = append(out, h.Name)
	}
	return out
}

func testHosts(t *testing.T, r *repo.Repo) {
	ctx := t.Context()
	put := func(h repo.Host, rev int64) bool {
		t.Helper()
		ok, err := r.PutHost(ctx, h, rev)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !put(repo.Host{Name: "b", Groups: []string{"prod"}}, 0) || !put(repo.Host{Name: "a", Groups: []string{"prod", "staging"}}, 0) {
		t.Fatal("a new host was not written")
	}
	if put(repo.Host{Name: "a", Groups: []string{"dev"}}, 0) {
		t.Fatal("a second host a was written over the first")
	}
	got, err := r.GroupHosts(ctx, "prod")
	if err != nil || !slices.Equal(names(got), []string{"a", "b"}) {
		t.Fatalf("GroupHosts(prod) = %v, %v; want [a b]", names(got), err)
	}
	// a leaves prod for dev: the index follows.
	_, rev, err := r.Host(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if !put(repo.Host{Name: "a", Groups: []string{"dev"}}, rev) {
		t.Fatal("a's change was refused")
	}
	if put(repo.Host{Name: "a", Groups: []string{"x"}}, rev) {
		t.Fatal("a change from an old revision was written")
	}
	for group, want := range map[string][]string{"prod": {"b"}, "staging": {}, "dev": {"a"}, "none": {}} {
		got, err := r.GroupHosts(ctx, group)
		if err != nil || !slices.Equal(names(got), want) {
			t.Errorf("GroupHosts(%s) = %v, %v; want %v", group, names(got), err, want)
		}
	}
	kvs, _, err := r.Store().List(ctx, repo.PrefixGroupIdx+"staging/")
	if err != nil || len(kvs) != 0 {
		t.Errorf("staging's index keeps %d keys (%v) after its only host left", len(kvs), err)
	}
	h, _, err := r.Host(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.ForgetHost(ctx, h); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Host(ctx, "a"); ferry.ErrorCode(err) != ferry.ENOTFOUND {
		t.Errorf("Host(a) after ForgetHost: %v, want not found", err)
	}
	if got, _ := r.GroupHosts(ctx, "dev"); len(got) != 0 {
		t.Errorf("GroupHosts(dev) after ForgetHost = %v", names(got))
	}
	all, err := r.Hosts(ctx)
	if err != nil || !slices.Equal(names(all), []string{"b"}) {
		t.Errorf("Hosts = %v, %v; want [b]", names(all), err)
	}
}

// An index key a crash left behind (its host gone, or no longer in the
// group) is passed over, not answered.
func testGroupIndexStale(t *testing.T, r *repo.Repo) {
	ctx := t.Context()
	if _, err := r.PutHost(ctx, repo.Host{Name: "a", Groups: []string{"dev"}}, 0); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{repo.PrefixGroupIdx + "prod/a", repo.PrefixGroupIdx + "prod/gone"} {
		if _, err := r.Store().Put(ctx, k, nil, 0); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := r.GroupHosts(ctx, "prod"); err != nil || len(got) != 0 {
		t.Errorf("GroupHosts(prod) = %v, %v; want none", names(got), err)
	}
}

func testReports(t *testing.T, r *repo.Repo) {
	ctx := t.Context()
	reps := map[string]repo.Report{}
	var all []string
	for i := range 80 {
		h := fmt.Sprintf("h%02d", i)
		all = append(all, h)
		reps[h] = repo.Report{State: api.HostReport{Host: h}, From: "first"}
	}
	if err := r.PutReports(ctx, reps); err != nil {
		t.Fatal(err)
	}
	if err := r.PutReports(ctx, map[string]repo.Report{"h01": {From: "second"}}); err != nil {
		t.Fatal(err)
	}
	// Few hosts are read one by one, many by a listing: the same answer.
	for _, hosts := range [][]string{{"h01", "h02", "nobody"}, append(all, "nobody")} {
		got, rev, err := r.HostReports(ctx, hosts)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(hosts)-1 || got["h01"].From != "second" || got["h02"].From != "first" || rev <= 0 {
			t.Errorf("HostReports(%d hosts) = %d reports, h01 from %q, rev %d", len(hosts), len(got), got["h01"].From, rev)
		}
		if _, ok := got["nobody"]; ok {
			t.Error("a report of a host that never reported")
		}
	}
}

func testDesired(t *testing.T, r *repo.Repo) {
	ctx := t.Context()
	var hosts []string
	for i := range state.MaxSwaps + 5 { // more than one transaction
		hosts = append(hosts, fmt.Sprintf("h%03d", i))
	}
	e := repo.DesiredEntry{Release: 3, SHA256: "abc", Group: "prod"}
	if err := r.SetDesiredMany(ctx, hosts, "web", e); err != nil {
		t.Fatal(err)
	}
	all, err := r.AllDesired(ctx)
	if err != nil || len(all) != len(hosts) || all["h104"].Apps["web"] != e {
		t.Fatalf("AllDesired: %d hosts (%v), h104 %+v", len(all), err, all["h104"])
	}
	// Another group's entry is neither replaced nor removed.
	if changed, err := r.SetDesired(ctx, "h000", "web", repo.DesiredEntry{Release: 4, SHA256: "def", Group: "staging"}); err != nil || changed {
		t.Errorf("SetDesired from another group: changed %v, %v", changed, err)
	}
	if changed, err := r.SetDesired(ctx, "h000", "web", repo.DesiredEntry{Group: "prod"}); err != nil || !changed {
		t.Errorf("SetDesired removing: changed %v, %v", changed, err)
	}
	d, err := r.Desired(ctx, "h000")
	if err != nil || len(d.Apps) != 0 {
		t.Errorf("Desired(h000) = %+v, %v; want empty", d, err)
	}
	if d, err := r.Desired(ctx, "nobody"); err != nil || d.Apps != nil {
		t.Errorf("Desired(nobody) = %+v, %v", d, err)
	}
}

func deployment(id, app, group string, started time.Time) repo.Deployment {
	return repo.Deployment{Deployment: api.Deployment{ID: id, App: app, Group: group, Release: 1, State: api.DeployRunning, Started: started}}
}

func testDeployments(t *testing.T, r *repo.Repo) {
	ctx := t.Context()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, d := range []repo.Deployment{
		deployment("d3", "web", "prod", t0.Add(3*time.Second)),
		deployment("d1", "web", "prod", t0.Add(1*time.Second)),
		deployment("d2", "web", "staging", t0.Add(2*time.Second)),
		deployment("d4", "api", "prod", t0.Add(4*time.Second)),
		deployment("d5", "web", "prod-eu", t0.Add(5*time.Second)),
	} {
		if err := r.CreateDeployment(ctx, d); err != nil {
			t.Fatalf("%d: %v", i, err)
		}
	}
	if err := r.CreateDeployment(ctx, deployment("d1", "web", "prod", t0)); err == nil {
		t.Error("a second deployment d1 was stored")
	}
	ids := func(ds []repo.Deployment) []string {
		out := []string{}
		for _, d := range ds {
			out = append(out, d.ID)
		}
		return out
	}
	for _, tc := range []struct {
		app, group string
		want       []string
	}{
		{"web", "prod", []string{"d1", "d3"}}, // oldest first; not prod-eu
		{"web", "", []string{"d1", "d2", "d3", "d5"}},
		{"", "prod", []string{"d1", "d3", "d4"}},
		{"", "", []string{"d1", "d2", "d3", "d4", "d5"}},
		{"nope", "prod", []string{}},
	} {
		got, err := r.Deployments(ctx, tc.app, tc.group)
		if err != nil || !slices.Equal(ids(got), tc.want) {
			t.Errorf("Deployments(%q, %q) = %v, %v; want %v", tc.app, tc.group, ids(got), err, tc.want)
		}
	}
	d, err := r.UpdateDeployment(ctx, "d3", func(d *repo.Deployment) error {
		d.State, d.Promoted = api.DeploySucceeded, true
		return nil
	})
	if err != nil || d.State != api.DeploySucceeded {
		t.Fatalf("UpdateDeployment: %+v, %v", d, err)
	}
	if got, err := r.Deployment(ctx, "d3"); err != nil || !got.Promoted || got.App != "web" {
		t.Errorf("Deployment(d3) = %+v, %v", got, err)
	}
	for _, id := range []string{"nope", "", "../d3"} {
		if _, err := r.Deployment(ctx, id); ferry.ErrorCode(err) != ferry.ENOTFOUND {
			t.Errorf("Deployment(%q): %v, want not found", id, err)
		}
		if _, err := r.UpdateDeployment(ctx, id, func(*repo.Deployment) error { return nil }); ferry.ErrorCode(err) != ferry.ENOTFOUND {
			t.Errorf("UpdateDeployment(%q): %v, want not found", id, err)
		}
	}
	if err := r.DeleteDeployment(ctx, d); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Deployment(ctx, "d3"); ferry.ErrorCode(err) != ferry.ENOTFOUND {
		t.Errorf("Deployment(d3) after delete: %v", err)
	}
	all, rev, err := r.AllDeployments(ctx)
	if err != nil || len(all) != 4 || rev <= 0 {
		t.Errorf("AllDeployments: %d, rev %d, %v", len(all), rev, err)
	}
}

// Wait on a deployment's key answers when it changes, not before.
func testDeploymentWait(t *testing.T, r *repo.Repo) {
	ctx := t.Context()
	if err := r.CreateDeployment(ctx, deployment("d1", "web", "prod", time.Now())); err != nil {
		t.Fatal(err)
	}
	key, err := r.DeploymentKey(ctx, "d1")
	if err != nil {
		t.Fatal(err)
	}
	_, idx, err := r.Wait(ctx, key, 0, 0)
	if err != nil || idx <= 0 {
		t.Fatalf("Wait: %d, %v", idx, err)
	}
	done := make(chan repo.Deployment, 1)
	go func() {
		val, _, err := r.Wait(ctx, key, idx, 10*time.Second)
		var d repo.Deployment
		if err == nil {
			err = json.Unmarshal(val, &d)
		}
		if err != nil {
			t.Error(err)
		}
		done <- d
	}()
	if _, err := r.UpdateDeployment(ctx, "d1", func(d *repo.Deployment) error { d.Promoted = true; return nil }); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-done:
		if !d.Promoted {
			t.Errorf("Wait answered %+v, before the change", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not answer the change")
	}
}

func testReleases(t *testing.T, r *repo.Repo) {
	ctx := t.Context()
	rel := api.Release{App: "web", Number: 1, SHA256: "a"}
	if ok, err := r.CreateRelease(ctx, rel); err != nil || !ok {
		t.Fatalf("CreateRelease: %v, %v", ok, err)
	}
	if ok, err := r.CreateRelease(ctx, api.Release{App: "web", Number: 1, SHA256: "b"}); err != nil || ok {
		t.Errorf("CreateRelease of a taken number: %v, %v", ok, err)
	}
	if ok, _ := r.CreateRelease(ctx, api.Release{App: "webx", Number: 1}); !ok {
		t.Error("webx v1 refused")
	}
	if rels, err := r.Releases(ctx, "web"); err != nil || len(rels) != 1 || rels[0].SHA256 != "a" {
		t.Errorf("Releases(web) = %+v, %v", rels, err)
	}
	if _, found, err := r.Release(ctx, "web", 2); err != nil || found {
		t.Errorf("Release(web, 2): found %v, %v", found, err)
	}
	g := repo.GroupRelease{App: "web", Group: "prod", Release: 1, SHA256: "a", Deployment: "d1"}
	if err := r.SetGroupRelease(ctx, g); err != nil {
		t.Fatal(err)
	}
	if got, found, err := r.GroupRelease(ctx, "web", "prod"); err != nil || !found || got != g {
		t.Errorf("GroupRelease = %+v, %v, %v", got, found, err)
	}
	if grs, err := r.GroupReleases(ctx); err != nil || len(grs) != 1 || grs[0] != g {
		t.Errorf("GroupReleases = %+v, %v", grs, err)
	}
	if err := r.SetGroupRelease(ctx, repo.GroupRelease{App: "web", Group: "prod"}); err != nil {
		t.Fatal(err)
	}
	if _, found, _ := r.GroupRelease(ctx, "web", "prod"); found {
		t.Error("release 0 left a group release")
	}
}

func testLocks(t *testing.T, r *repo.Repo) {
	ctx := t.Context()
	lease, err := r.Store().Grant(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	l := repo.Lock{Lock: api.Lock{App: "web", Group: "prod", Owner: "me"}, Deployment: "d1"}
	if ok, err := r.CreateLock(ctx, l, lease); err != nil || !ok {
		t.Fatalf("CreateLock: %v, %v", ok, err)
	}
	if ok, err := r.CreateLock(ctx, repo.Lock{Lock: api.Lock{App: "web", Group: "prod"}, Deployment: "d2"}, lease); err != nil || ok {
		t.Errorf("CreateLock of a held lock: %v, %v", ok, err)
	}
	got, gotLease, found, err := r.Lock(ctx, "web", "prod")
	if err != nil || !found || got.Deployment != "d1" || gotLease != lease {
		t.Errorf("Lock = %+v, %d, %v, %v", got, gotLease, found, err)
	}
	if ls, err := r.Locks(ctx); err != nil || len(ls) != 1 {
		t.Errorf("Locks = %+v, %v", ls, err)
	}
	if err := r.Store().Revoke(ctx, lease); err != nil {
		t.Fatal(err)
	}
	if _, _, found, err := r.Lock(ctx, "web", "prod"); err != nil || found {
		t.Errorf("Lock after its lease ended: found %v, %v", found, err)
	}
}

func testAudit(t *testing.T, r *repo.Repo) {
	ctx := t.Context()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 10 {
		app := "web"
		if i%2 == 1 {
			app = "api"
		}
		if err := r.AppendAudit(ctx, api.AuditEvent{Time: t0.Add(time.Duration(i) * time.Second), Action: fmt.Sprint(i), App: app}); err != nil {
			t.Fatal(err)
		}
	}
	actions := func(evs []api.AuditEvent) []string {
		out := []string{}
		for _, e := range evs {
			out = append(out, e.Action)
		}
		return out
	}
	web := func(e api.AuditEvent) bool { return e.App == "web" }
	all := func(api.AuditEvent) bool { return true }
	for _, tc := range []struct {
		keep  func(api.AuditEvent) bool
		limit int
		want  []string
	}{
		{web, 3, []string{"4", "6", "8"}}, // the newest three, oldest first
		{web, 0, []string{"0", "2", "4", "6", "8"}},
		{all, 2, []string{"8", "9"}},
		{func(api.AuditEvent) bool { return false }, 5, []string{}},
	} {
		got, err := r.Audit(ctx, tc.keep, tc.limit)
		if err != nil || !slices.Equal(actions(got), tc.want) {
			t.Errorf("Audit(limit %d) = %v, %v; want %v", tc.limit, actions(got), err, tc.want)
		}
	}
}

// A state an older server wrote (deployments at deployments/<id>, no
// group index) reads as if this one had written it, after Upgrade.
func testUpgrade(t *testing.T, r *repo.Repo) {
	ctx := t.Context()
	st := r.Store()
	put := func(key string, v any) {
		t.Helper()
		b, _ := json.Marshal(v)
		if _, err := st.Put(ctx, key, b, 0); err != nil {
			t.Fatal(err)
		}
	}
	put(repo.PrefixHosts+"a", repo.Host{Name: "a", Groups: []string{"prod"}})
	put("deployments/d1", deployment("d1", "web", "prod", time.Now()))
	if got, _ := r.GroupHosts(ctx, "prod"); len(got) != 0 {
		t.Fatal("the old layout has a group index already: the test proves nothing")
	}
	for range 2 { // idempotent
		if err := r.Upgrade(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := r.GroupHosts(ctx, "prod"); err != nil || !slices.Equal(names(got), []string{"a"}) {
		t.Errorf("GroupHosts(prod) after Upgrade = %v, %v", names(got), err)
	}
	if d, err := r.Deployment(ctx, "d1"); err != nil || d.App != "web" {
		t.Errorf("Deployment(d1) after Upgrade = %+v, %v", d, err)
	}
	if ds, _ := r.Deployments(ctx, "web", "prod"); len(ds) != 1 {
		t.Errorf("Deployments(web, prod) after Upgrade: %d", len(ds))
	}
	if kvs, _, _ := st.List(ctx, "deployments/"); len(kvs) != 0 {
		t.Errorf("%d deployments left under the old prefix", len(kvs))
	}
}
