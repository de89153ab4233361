package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/client"
	"github.com/ferrydeploy/ferry/internal/artifact"
	"github.com/ferrydeploy/ferry/internal/store"
	"github.com/ferrydeploy/ferry/internal/store/dir"
	"github.com/ferrydeploy/ferry/internal/tlsca"
)

// countingBlobs is an artifact store that counts what is asked of it.
type countingBlobs struct {
	store.Store
	opens, puts atomic.Int64
}

func (c *countingBlobs) Open(ctx context.Context, key string, offset int64) (io.ReadCloser, int64, error) {
	c.opens.Add(1)
	return c.Store.Open(ctx, key, offset)
}

func (c *countingBlobs) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	c.puts.Add(1)
	return c.Store.Put(ctx, key, r, size)
}

// traffic counts the API requests a server sees and the body bytes it
// reads from them.
type traffic struct {
	requests, bodyBytes atomic.Int64
}

type countedBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b countedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// startCounted is startServer with a countingBlobs and its API requests
// counted.
func startCounted(t *testing.T, mod ...func(*Config)) (*testServer, *countingBlobs, *traffic) {
	t.Helper()
	dirStore, err := dir.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cs := &countingBlobs{Store: dirStore}
	data := t.TempDir()
	cfg := Config{Data: data, Listen: "127.0.0.1:0", HostLostAfter: 10 * time.Second, Store: cs}
	for _, m := range mod {
		m(&cfg)
	}
	srv, err := newServer(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := ReadAdminToken(data)
	if err != nil {
		t.Fatal(err)
	}
	tr := &traffic{}
	next := srv.mux
	srv.mux = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v1/") {
			tr.requests.Add(1)
			r.Body = countedBody{r.Body, &tr.bodyBytes}
		}
		next.ServeHTTP(w, r)
	})
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{t: t, srv: srv, data: data, admin: admin, cancel: cancel, done: make(chan error, 1),
		client: &http.Client{Transport: &http.Transport{TLSClientConfig: tlsca.PinnedClient(srv.CASHA256())}}}
	go func() { ts.done <- srv.Run(ctx) }()
	t.Cleanup(ts.stop)
	return ts, cs, tr
}

// artifactRec reads the state's record of artifact sum.
func (ts *testServer) artifactRec(sum string) artifactRecord {
	ts.t.Helper()
	var rec artifactRecord
	if found, err := ts.srv.lookup(context.Background(), prefixArts+sum, &rec); err != nil || !found {
		ts.t.Fatalf("record of %s: %v, found %v", sum, err, found)
	}
	return rec
}

// TestPublishIsOneRequest: ferry publish is one request, new artifact or
// not; the server takes the record's metadata and deploy policy from the
// body as it streams in and never reads the blob back; an artifact it has
// is answered before the body is sent; bytes left under the key without a
// record are read once, to check and record them.
func TestPublishIsOneRequest(t *testing.T) {
	ts, cs, tr := startCounted(t)
	c, err := client.New(ts.srv.URL(), ts.admin, ts.srv.CASHA256())
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	path, sum := buildAppWith(t, "web", "1.0.0", "deploy: {strategy: canary, canary: 2, batch: \"50%\", health_timeout: 9s, auto_rollback: false}\n")
	fi, _ := os.Stat(path)

	a, err := c.UploadArtifact(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if a.Existed || a.App != "web" || a.Version != "1.0.0" || a.SHA256 != sum || a.Size != fi.Size() {
		t.Errorf("first publish: %+v", a)
	}
	if n := tr.requests.Load(); n != 1 {
		t.Errorf("publishing a new artifact took %d requests, want 1", n)
	}
	if n := tr.bodyBytes.Load(); n != fi.Size() {
		t.Errorf("the server read %d body bytes, want the artifact's %d", n, fi.Size())
	}
	if n := cs.opens.Load(); n != 0 {
		t.Errorf("the server read the stored artifact back %d times after its upload", n)
	}
	rec := ts.artifactRec(sum)
	want := appDeploy{Strategy: api.StrategyCanary, Canary: 2, Batch: "50%", HealthTimeout: 9 * time.Second, AutoRollback: false}
	if rec.Deploy == nil || *rec.Deploy != want || rec.OS != "linux" || rec.Arch != "amd64" || rec.Version != "1.0.0" {
		t.Errorf("record %+v, deploy policy %+v; want %+v from ferry.yaml, linux/amd64 from meta.json", rec, rec.Deploy, want)
	}

	tr.requests.Store(0)
	tr.bodyBytes.Store(0)
	var progress atomic.Int64
	a, err = c.UploadArtifact(ctx, path, func(done, total int64) { progress.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	if !a.Existed || a.App != "web" || a.Version != "1.0.0" || a.SHA256 != sum {
		t.Errorf("second publish: %+v", a)
	}
	if n := tr.requests.Load(); n != 1 {
		t.Errorf("publishing an artifact the server has took %d requests, want 1", n)
	}
	if n := tr.bodyBytes.Load(); n != 0 || progress.Load() != 0 {
		t.Errorf("an artifact the server has was sent again: %d body bytes read, %d progress calls", n, progress.Load())
	}
	if n := cs.puts.Load(); n != 1 {
		t.Errorf("%d Puts, want the first publish's only", n)
	}

	// Bytes under an artifact's key that no record names (an upload that
	// failed after storing them): one read checks and records them, and
	// the body is not asked for.
	path2, sum2 := buildAppWith(t, "web", "2.0.0", "deploy: {strategy: all}\n")
	b, _ := os.ReadFile(path2)
	if err := cs.Store.Put(ctx, store.ArtifactKey("web", sum2), bytes.NewReader(b), int64(len(b))); err != nil {
		t.Fatal(err)
	}
	tr.requests.Store(0)
	tr.bodyBytes.Store(0)
	if a, err = c.UploadArtifact(ctx, path2, nil); err != nil || a.Version != "2.0.0" {
		t.Fatalf("publish over stored bytes: %+v, %v", a, err)
	}
	if r, n, o := tr.requests.Load(), tr.bodyBytes.Load(), cs.opens.Load(); r != 1 || n != 0 || o != 1 {
		t.Errorf("publish over stored bytes: %d requests, %d body bytes, %d store reads; want 1, 0, 1", r, n, o)
	}
	if rec := ts.artifactRec(sum2); rec.Deploy == nil || rec.Deploy.Strategy != api.StrategyAll {
		t.Errorf("record of stored bytes: %+v, policy %+v", rec, rec.Deploy)
	}
}

// TestDeployReadsPolicyFromRecord: a deploy of a new artifact takes the
// app's deploy policy from the artifact's record, without opening the blob.
func TestDeployReadsPolicyFromRecord(t *testing.T) {
	ts, cs, _ := startCounted(t)
	ts.sim("web-1", ts.join("web-1", "prod"), nil)
	ts.publishWith("web", "1.0.0", "deploy: {strategy: all, health_timeout: 7s, auto_rollback: false}\n")
	var d api.Deployment
	ts.must(201, "POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "web", Group: "prod"}, &d)
	if d.Strategy != api.StrategyAll || d.HealthTimeout != 7*time.Second || d.AutoRollback {
		t.Errorf("deployment %s, %v, auto-rollback %v: want ferry.yaml's all, 7s, false", d.Strategy, d.HealthTimeout, d.AutoRollback)
	}
	if n := cs.opens.Load(); n != 0 {
		t.Errorf("publish and deploy opened the stored artifact %d times, want 0", n)
	}
}

// TestOldArtifactRecordDeploys: the record of an artifact an older server
// took has no deploy policy; its first deploy reads it from the blob and
// stores it, and later deploys read only the record.
func TestOldArtifactRecordDeploys(t *testing.T) {
	ts, cs, _ := startCounted(t)
	ctx := context.Background()
	ts.sim("web-1", ts.join("web-1", "prod"), nil)
	a := ts.publishWith("web", "1.0.0", "deploy: {strategy: all, health_timeout: 7s, auto_rollback: false}\n")
	old, _ := json.Marshal(a) // the record as a server before this one stored it
	if _, err := ts.srv.st.Put(ctx, prefixArts+a.SHA256, old, 0); err != nil {
		t.Fatal(err)
	}
	if rec := ts.artifactRec(a.SHA256); rec.Deploy != nil {
		t.Fatalf("an old-style record has a policy: %+v", rec.Deploy)
	}
	for i := range 2 {
		var d api.Deployment
		ts.must(201, "POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "web", Group: "prod", WaitLock: 10 * time.Second}, &d)
		if d.Strategy != api.StrategyAll || d.HealthTimeout != 7*time.Second || d.AutoRollback {
			t.Errorf("deploy %d: %s, %v, auto-rollback %v: want ferry.yaml's all, 7s, false", i+1, d.Strategy, d.HealthTimeout, d.AutoRollback)
		}
		ts.waitDeployment(d.ID, "ended", func(d api.Deployment) bool { return d.State != api.DeployRunning })
		if n := cs.opens.Load(); n != 1 {
			t.Errorf("after deploy %d the blob was opened %d times, want once (the first deploy)", i+1, n)
		}
	}
	want := appDeploy{Strategy: api.StrategyAll, Batch: "25%", HealthTimeout: 7 * time.Second}
	if rec := ts.artifactRec(a.SHA256); rec.Deploy == nil || *rec.Deploy != want || rec.Version != "1.0.0" || rec.By == "" {
		t.Errorf("record after the first deploy: %+v, policy %+v; want the policy %+v stored beside what it had", rec, rec.Deploy, want)
	}
}

// TestArtifactSpecAtDeploy: an artifact without ferry.yaml deploys with the
// server's defaults; one whose ferry.yaml does not parse is published, and
// its deploys fail saying why, as when ferry.yaml was read at deploy time.
func TestArtifactSpecAtDeploy(t *testing.T) {
	ts := startServer(t, t.TempDir())
	ts.join("web-1", "prod")
	pack := func(app, version string, ferryYAML string) api.Artifact {
		t.Helper()
		entries := []artifact.Entry{
			{Name: ".ferry", Dir: true},
			{Name: ferry.MetaPath, Data: []byte(`{"app":"` + app + `","version":"` + version + `"}`)},
		}
		if ferryYAML != "" {
			entries = append(entries, artifact.Entry{Name: "ferry.yaml", Data: []byte(ferryYAML)})
		}
		p := filepath.Join(t.TempDir(), "a.tar.zst")
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := artifact.Pack(f, entries, artifact.FormatZstd, time.Unix(1_700_000_000, 0)); err != nil {
			t.Fatal(err)
		}
		f.Close()
		b, _ := os.ReadFile(p)
		var a api.Artifact
		if code, msg := ts.send("POST", api.PathArtifacts, ts.admin, bytes.NewReader(b), map[string]string{api.SHA256Header: sha(b), api.AppHeader: app}, &a); code != 201 {
			t.Fatalf("publish %s: %d %s", app, code, msg)
		}
		return a
	}
	pack("bare", "1", "")
	var d api.Deployment
	ts.must(201, "POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "bare", Group: "prod"}, &d)
	if d.Strategy != api.StrategyRolling || d.Batch != defaultBatch || d.HealthTimeout != defaultHealthTimeout || !d.AutoRollback {
		t.Errorf("deploy without ferry.yaml: %+v, want the server's defaults", d)
	}
	pack("bad", "1", "app: bad\ndeploy: {strategy: sideways}\n")
	code, msg := ts.call("POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "bad", Group: "prod"}, nil)
	if code != 400 || !strings.Contains(msg, "ferry.yaml of release v1") || !strings.Contains(msg, "sideways") {
		t.Errorf("deploy with a bad ferry.yaml: %d %s", code, msg)
	}
}
