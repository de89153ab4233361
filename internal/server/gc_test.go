package server

import (
	"context"
	"slices"
	"testing"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/internal/store"
)

// TestGC: gc removes published artifacts no release names beyond each
// app's newest Keep, bytes and record, says what it removed, and leaves
// every released artifact so rollbacks still work.
func TestGC(t *testing.T) {
	ts := startServer(t, t.TempDir())
	ctx := context.Background()
	var web []api.Artifact
	for _, v := range []string{"1.0.0", "2.0.0", "3.0.0", "4.0.0"} {
		web = append(web, ts.publish("web", v))
	}
	apiArt := ts.publish("api", "1.0.0")
	cred := ts.join("web-1", "prod")
	ts.must(201, "POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "web", Group: "prod", SHA256: web[0].SHA256}, nil)
	ts.waitDesired(cred, "web", "v1")

	for _, role := range []string{api.RoleViewer, api.RoleDeployer} {
		tok := ts.token(api.TokenRequest{Name: "t-" + role, Role: role})
		if code, msg := ts.call("POST", api.PathGC, tok, api.GCRequest{}, nil); code != 403 {
			t.Fatalf("gc as %s: %d %s, want 403", role, code, msg)
		}
	}
	if code, _ := ts.call("POST", api.PathGC, ts.admin, api.GCRequest{Keep: -1}, nil); code != 400 {
		t.Fatalf("gc with keep -1: %d, want 400", code)
	}
	shas := func(arts []api.Artifact) []string {
		var out []string
		for _, a := range arts {
			out = append(out, a.SHA256)
		}
		slices.Sort(out)
		return out
	}
	want := shas([]api.Artifact{web[1], web[2]}) // v1 is released, v4 the newest, api's only one the newest
	// Young artifacts stay.
	var res api.GCResult
	ts.must(200, "POST", api.PathGC, ts.admin, api.GCRequest{Keep: 1, MinAge: 3600e9}, &res)
	if len(res.Removed) != 0 || res.Kept != 5 {
		t.Fatalf("gc with min age 1h: %+v, want nothing removed", res)
	}
	ts.must(200, "POST", api.PathGC, ts.admin, api.GCRequest{Keep: 1, DryRun: true}, &res)
	if got := shas(res.Removed); !slices.Equal(got, want) || !res.DryRun || res.Freed != web[1].Size+web[2].Size {
		t.Fatalf("dry run: %+v, want %v", res, want)
	}
	if keys, _ := ts.srv.blobs.List(ctx, "artifacts/web/"); len(keys) != 4 {
		t.Fatalf("a dry run removed blobs: %v", keys)
	}
	ts.must(200, "POST", api.PathGC, ts.admin, api.GCRequest{Keep: 1}, &res)
	if got := shas(res.Removed); !slices.Equal(got, want) || res.Kept != 3 || len(res.Failed) != 0 {
		t.Fatalf("gc: %+v, want %v removed and 3 kept", res, want)
	}
	for _, a := range []api.Artifact{web[1], web[2]} {
		if _, err := ts.srv.blobs.Stat(ctx, store.ArtifactKey("web", a.SHA256)); ferry.ErrorCode(err) != ferry.ENOTFOUND {
			t.Errorf("%s %s: blob still there (%v)", a.App, a.Version, err)
		}
	}
	var list []api.Artifact
	ts.must(200, "GET", api.PathArtifacts, ts.admin, nil, &list)
	if got := shas(list); !slices.Equal(got, shas([]api.Artifact{web[0], web[3], apiArt})) {
		t.Fatalf("artifacts after gc: %v", got)
	}
	// Nothing left to remove; a removed artifact can be published again.
	ts.must(200, "POST", api.PathGC, ts.admin, api.GCRequest{Keep: 1}, &res)
	if len(res.Removed) != 0 {
		t.Fatalf("second gc removed %+v", res.Removed)
	}
	if a := ts.publish("web", "2.0.0"); a.Existed || a.SHA256 != web[1].SHA256 {
		t.Fatalf("publish after gc: %+v", a)
	}
	// The released artifact stays for rollbacks.
	if err := store.Verify(ctx, ts.srv.blobs, store.ArtifactKey("web", web[0].SHA256), web[0].SHA256); err != nil {
		t.Fatalf("the released artifact after gc: %v", err)
	}
	var evs []api.AuditEvent
	ts.must(200, "GET", api.PathAudit, ts.admin, nil, &evs)
	if !slices.ContainsFunc(evs, func(e api.AuditEvent) bool { return e.Action == "gc" }) {
		t.Error("no gc audit event")
	}
}
