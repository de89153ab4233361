package client_test

// These tests run the client against a real in-process ferry server on
// loopback, over TLS pinned to the server's own CA: no mocks.

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/client"
	"github.com/ferrydeploy/ferry/client/clienttest"
	"github.com/ferrydeploy/ferry/internal/artifact"
	"github.com/ferrydeploy/ferry/internal/fetch"
)

func code(err error) string { return ferry.ErrorCode(err) }

func TestUploadSkipsWhatTheServerHas(t *testing.T) {
	srv := clienttest.StartServer(t)
	c := clienttest.Client(t, srv, srv.AdminToken())
	ctx := t.Context()
	path := clienttest.WriteArtifact(t, t.TempDir(), "hello", "v1.0.0", 100_000)
	sum, size, err := artifact.FileSHA256(path)
	if err != nil {
		t.Fatal(err)
	}
	var last, calls int64
	a, err := c.UploadArtifact(ctx, path, func(done, total int64) {
		calls++
		if total != size || done < last {
			t.Errorf("progress %d/%d after %d", done, total, last)
		}
		last = done
	})
	if err != nil {
		t.Fatal(err)
	}
	if a.Existed || a.App != "hello" || a.Version != "v1.0.0" || a.SHA256 != sum || a.Size != size {
		t.Errorf("first upload: %+v", a)
	}
	if last != size {
		t.Errorf("progress ended at %d of %d", last, size)
	}
	calls = 0
	a, err = c.UploadArtifact(ctx, path, func(done, total int64) { calls++ })
	if err != nil {
		t.Fatal(err)
	}
	if !a.Existed || a.App != "hello" || a.Version != "v1.0.0" || calls != 0 {
		t.Errorf("second upload sent %d progress calls: %+v", calls, a)
	}
	if has, err := c.HasArtifact(ctx, strings.Repeat("0", 64)); has || err != nil {
		t.Errorf("HasArtifact(unknown) = %v, %v", has, err)
	}
	// A file that is not a ferry artifact is refused as invalid input.
	junk := filepath.Join(t.TempDir(), "junk.tar.zst")
	os.WriteFile(junk, []byte("not an archive"), 0o644)
	if _, err := c.UploadArtifact(ctx, junk, nil); code(err) != ferry.EINVALID {
		t.Errorf("junk upload: %v (%s)", err, code(err))
	}
}

func TestDeployDetachedThenBlockingGet(t *testing.T) {
	srv := clienttest.StartServer(t)
	c := clienttest.Client(t, srv, srv.AdminToken())
	ctx := t.Context()
	if _, err := c.UploadArtifact(ctx, clienttest.WriteArtifact(t, t.TempDir(), "hello", "v1.0.0", 0), nil); err != nil {
		t.Fatal(err)
	}
	clienttest.JoinToken(t, c, "prod")
	d, err := c.Deploy(ctx, api.DeployRequest{App: "hello", Group: "prod", Version: "v1.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	if d.ID == "" || d.Release != 1 || d.App != "hello" || d.Group != "prod" {
		t.Fatalf("deployment %+v", d)
	}
	var index uint64
	deadline := time.Now().Add(30 * time.Second)
	for d.State != api.DeploySucceeded {
		if time.Now().After(deadline) || d.State == api.DeployFailed {
			t.Fatalf("deployment did not succeed: %+v", d)
		}
		var next uint64
		d, next, err = c.Deployment(ctx, d.ID, index, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if next == 0 {
			t.Fatal("no " + api.IndexHeader + " on a deployment")
		}
		index = next
	}
	// Past the last change, a blocking get waits for its whole wait. (A
	// store may end a watch early on a loaded machine, and the server then
	// answers what it has: the same index. Once is allowed, not a habit.)
	start, early := time.Now(), 0
	for {
		t0 := time.Now()
		_, next, err := c.Deployment(ctx, d.ID, index, 300*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if next != index {
			t.Fatalf("the index moved from %d to %d with nothing new", index, next)
		}
		if time.Since(t0) >= 250*time.Millisecond {
			break
		}
		if early++; early > 3 {
			t.Fatalf("blocking get returned early %d times in %v with nothing new", early, time.Since(start))
		}
	}
	ds, err := c.Deployments(ctx, "hello", "prod")
	if err != nil || len(ds) != 1 || ds[0].ID != d.ID {
		t.Errorf("Deployments = %+v, %v", ds, err)
	}
	rels, err := c.Releases(ctx, "hello")
	if err != nil || len(rels) != 1 || rels[0].Number != 1 || rels[0].Version != "v1.0.0" {
		t.Errorf("Releases = %+v, %v", rels, err)
	}
	if _, _, err := c.Deployment(ctx, "d-none", 0, 0); code(err) != ferry.ENOTFOUND {
		t.Errorf("unknown deployment: %v", err)
	}
	if _, err := c.Deploy(ctx, api.DeployRequest{App: "nope", Group: "prod"}); code(err) != ferry.ENOTFOUND {
		t.Errorf("unknown app: %v", err)
	}
	evs, err := c.Audit(ctx, 0)
	if err != nil || len(evs) == 0 {
		t.Errorf("Audit = %d events, %v", len(evs), err)
	}
}

func TestAgentJoinReportStatusDownload(t *testing.T) {
	srv := clienttest.StartServer(t)
	admin := clienttest.Client(t, srv, srv.AdminToken())
	ctx := t.Context()
	art, err := admin.UploadArtifact(ctx, clienttest.WriteArtifact(t, t.TempDir(), "hello", "v2.0.0", 0), nil)
	if err != nil {
		t.Fatal(err)
	}
	anon := clienttest.Client(t, srv, "")
	res, err := anon.Join(ctx, api.JoinRequest{Token: clienttest.JoinToken(t, admin, "prod"), Name: "web-1"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Host != "web-1" || res.Secret == "" || len(res.Groups) != 1 {
		t.Fatalf("join: %+v", res)
	}
	if _, err := anon.Join(ctx, api.JoinRequest{Token: "wrong", Name: "web-2"}); code(err) != ferry.EUNAUTH {
		t.Errorf("join with a bad token: %v (%s)", err, code(err))
	}
	ag := clienttest.Client(t, srv, res.Secret)
	if err := ag.Report(ctx, api.Report{State: api.HostReport{Host: "web-1", Apps: map[string]*api.AppStatus{}}}); err != nil {
		t.Fatal(err)
	}
	des, err := ag.Desired(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if des.Index == 0 || len(des.Doc.Apps) != 0 {
		t.Fatalf("desired before a deploy: %+v", des)
	}
	// An agent credential is not an API token.
	if _, err := ag.Apps(ctx); code(err) != ferry.EDENIED {
		t.Errorf("agent reading apps: %v (%s)", err, code(err))
	}

	// A deploy wakes the agent's blocking query.
	got := make(chan api.Desired, 1)
	go func() {
		d, err := ag.Desired(ctx, des.Index, 20*time.Second)
		if err != nil {
			t.Error(err)
		}
		got <- d
	}()
	if _, err := admin.Deploy(ctx, api.DeployRequest{App: "hello", Group: "prod", HealthTimeout: time.Minute}); err != nil {
		t.Fatal(err)
	}
	var d2 api.Desired
	select {
	case d2 = <-got:
	case <-time.After(20 * time.Second):
		t.Fatal("the blocking desired query did not wake up on a deploy")
	}
	entry, ok := d2.Doc.Apps["hello"]
	if !ok || entry.SHA256 != art.SHA256 || d2.Index <= des.Index {
		t.Fatalf("desired after the deploy: %+v", d2)
	}

	// The artifact URL downloads with the agent's credential, and only so.
	f, err := os.Create(filepath.Join(t.TempDir(), "dl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	reg := fetch.NewRegistry()
	reg["https"] = ag.ArtifactSource()
	r, err := reg.Download(ctx, entry.Artifact, f, fetch.Options{Checksum: entry.SHA256})
	if err != nil {
		t.Fatal(err)
	}
	if r.SHA256 != art.SHA256 || r.Bytes != art.Size {
		t.Errorf("download: %+v", r)
	}
	reg["https"] = clienttest.Client(t, srv, "").ArtifactSource()
	var se *fetch.StatusError
	if _, err := reg.Download(ctx, entry.Artifact, f, fetch.Options{}); !errors.As(err, &se) || se.Code != 401 {
		t.Errorf("download without a credential: %v", err)
	}

	st, err := admin.Status(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Hosts) != 1 || st.Hosts[0].Name != "web-1" || st.Hosts[0].LastSeen.IsZero() || st.Hosts[0].Lost {
		t.Errorf("status: %+v", st)
	}
}

func TestTokensAndScopes(t *testing.T) {
	srv := clienttest.StartServer(t)
	admin := clienttest.Client(t, srv, srv.AdminToken())
	ctx := t.Context()
	if _, err := admin.UploadArtifact(ctx, clienttest.WriteArtifact(t, t.TempDir(), "hello", "v1", 0), nil); err != nil {
		t.Fatal(err)
	}
	clienttest.JoinToken(t, admin, "prod")

	viewer, err := admin.CreateToken(ctx, api.TokenRequest{Name: "dash", Role: api.RoleViewer})
	if err != nil {
		t.Fatal(err)
	}
	vc := clienttest.Client(t, srv, viewer.Secret)
	if _, err := vc.Apps(ctx); err != nil {
		t.Fatalf("viewer reading apps: %v", err)
	}
	if _, err := vc.Deploy(ctx, api.DeployRequest{App: "hello", Group: "prod"}); code(err) != ferry.EDENIED {
		t.Errorf("viewer deploying: %v (%s)", err, code(err))
	}
	if _, err := vc.Tokens(ctx); code(err) != ferry.EDENIED {
		t.Errorf("viewer listing tokens: %v (%s)", err, code(err))
	}

	other, err := admin.CreateToken(ctx, api.TokenRequest{Name: "ci-other", Role: api.RoleDeployer, Apps: []string{"other"}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = clienttest.Client(t, srv, other.Secret).Deploy(ctx, api.DeployRequest{App: "hello", Group: "prod"})
	if code(err) != ferry.EDENIED || !strings.Contains(err.Error(), "hello") {
		t.Errorf("deployer scoped to other deploying hello: %v (%s)", err, code(err))
	}

	list, err := admin.Tokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, tok := range list {
		if tok.ID == viewer.ID {
			found = tok.Role == api.RoleViewer && tok.Name == "dash"
		}
	}
	if !found {
		t.Errorf("token list lacks the viewer: %+v", list)
	}
	if err := admin.RevokeToken(ctx, viewer.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := vc.Apps(ctx); code(err) != ferry.EUNAUTH {
		t.Errorf("revoked token: %v (%s)", err, code(err))
	}
	if _, err := clienttest.Client(t, srv, "").Apps(ctx); code(err) != ferry.EUNAUTH {
		t.Errorf("no token: %v (%s)", err, code(err))
	}
}

func TestLockedDeploy(t *testing.T) {
	srv := clienttest.StartServer(t)
	admin := clienttest.Client(t, srv, srv.AdminToken())
	ctx := t.Context()
	if _, err := admin.UploadArtifact(ctx, clienttest.WriteArtifact(t, t.TempDir(), "hello", "v1", 0), nil); err != nil {
		t.Fatal(err)
	}
	// A host that never reports keeps the rollout (and its lock) alive.
	clienttest.Join(t, srv, clienttest.JoinToken(t, admin, "prod"), "web-1")
	if _, err := admin.Deploy(ctx, api.DeployRequest{App: "hello", Group: "prod", HealthTimeout: time.Minute}); err != nil {
		t.Fatal(err)
	}
	_, err := admin.Deploy(ctx, api.DeployRequest{App: "hello", Group: "prod"})
	if code(err) != ferry.ELOCKED || !strings.Contains(err.Error(), "locked by admin") {
		t.Fatalf("second deploy: %v (%s)", err, code(err))
	}
	locks, err := admin.Locks(ctx)
	if err != nil || len(locks) != 1 || locks[0].App != "hello" || locks[0].Group != "prod" {
		t.Fatalf("locks: %+v, %v", locks, err)
	}
	if err := admin.BreakLock(ctx, "hello", "prod"); err != nil {
		t.Fatal(err)
	}
	if locks, err := admin.Locks(ctx); err != nil || len(locks) != 0 {
		t.Errorf("locks after break: %+v, %v", locks, err)
	}
}

func TestTransportErrors(t *testing.T) {
	srv := clienttest.StartServer(t)
	ctx := t.Context()
	// The wrong CA pin: the connection must fail, naming the server.
	bad, err := client.New(srv.URL(), srv.AdminToken(), strings.Repeat("ab", 32))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bad.Apps(ctx); err == nil || !strings.Contains(err.Error(), srv.URL()) {
		t.Errorf("wrong pin: %v", err)
	}
	// No pin: the server's own CA is not a system root.
	nopin, _ := client.New(srv.URL(), srv.AdminToken(), "")
	if _, err := nopin.Apps(ctx); err == nil || !strings.Contains(err.Error(), "--ca-sha256") {
		t.Errorf("no pin: %v", err)
	}
	gone, _ := client.New("https://127.0.0.1:1", "t", "")
	if _, err := gone.Apps(ctx); err == nil || !strings.Contains(err.Error(), "cannot reach ferry server https://127.0.0.1:1") {
		t.Errorf("unreachable: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := clienttest.Client(t, srv, srv.AdminToken()).Apps(cctx); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}
