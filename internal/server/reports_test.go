package server

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/internal/artifact"
	"github.com/ferrydeploy/ferry/internal/repo"
	"github.com/ferrydeploy/ferry/internal/state"
	"github.com/ferrydeploy/ferry/internal/state/bolt"
)

// TestReportWriterCoalesces: 300 reports sent at once are all stored, one
// per host, in far fewer transactions (CompareAndSwapMany calls) than
// reports.
func TestReportWriterCoalesces(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	counting := &countingStore{Store: st}
	w := newReportWriter(repo.New(counting))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go w.run(ctx)

	const hosts, rounds = 100, 3
	var wg sync.WaitGroup
	errs := make(chan error, hosts*rounds)
	for r := range rounds {
		for h := range hosts {
			wg.Go(func() { errs <- <-w.put(fmt.Sprintf("h%03d", h), repo.Report{From: fmt.Sprint(r)}) })
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	kvs, _, err := st.List(ctx, prefixReports)
	if err != nil || len(kvs) != hosts {
		t.Fatalf("%d reports stored (%v), want %d", len(kvs), err, hosts)
	}
	if n := counting.swaps.Load(); n >= hosts*rounds/4 {
		t.Errorf("%d transactions for %d reports: not coalesced", n, hosts*rounds)
	} else {
		t.Logf("%d reports in %d transactions", hosts*rounds, n)
	}
}

type countingStore struct {
	state.Store
	swaps atomic.Int64
}

func (c *countingStore) CompareAndSwapMany(ctx context.Context, swaps []state.Swap) (int64, bool, error) {
	c.swaps.Add(1)
	return c.Store.CompareAndSwapMany(ctx, swaps)
}

// TestAgentVerdictComesFirst: an agent measures the same health timeout
// from a moment later than the server; its verdict, which says why (the
// check's status), arrives just after the server's timeout and must be
// what the deployment reports, not "not running healthy".
func TestAgentVerdictComesFirst(t *testing.T) {
	ts := startServer(t, t.TempDir())
	web := ts.publish("web", "1.0.0")
	cred := ts.join("web-1", "prod")
	var d api.Deployment
	ts.must(201, "POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "web", Group: "prod", SHA256: web.SHA256, HealthTimeout: time.Second}, &d)
	want := ts.waitDesired(cred, "web", "v1").Doc.Apps["web"]
	ts.report(cred, "web-1", "web", "v1", "installing", "")
	time.Sleep(1200 * time.Millisecond) // past the server's 1 s: the agent's own timeout ends now
	failed := &api.AppStatus{Release: "v1-1a2b3c4d", Label: "v1", Number: 1, SHA256: web.SHA256, State: ferry.AppFailed, Rejected: &want,
		Error:   "release v1-1a2b3c4d: web.1 of v1-1a2b3c4d not ready after 1s (unhealthy: health: GET /healthz: status 500)",
		Failure: &ferry.Failure{Kind: ferry.FailHealth, Release: "v1-1a2b3c4d", Message: "web.1 of v1-1a2b3c4d not ready after 1s (unhealthy: health: GET /healthz: status 500)"}}
	ts.must(http.StatusNoContent, "POST", api.PathReport, cred, api.Report{State: api.HostReport{Host: "web-1", Apps: map[string]*api.AppStatus{"web": failed}}}, nil)
	d = ts.waitDeployment(d.ID, "over", func(d api.Deployment) bool { return d.State.Ended() })
	if !strings.Contains(d.Error, "status 500") {
		t.Errorf("deployment error %q does not carry the agent's reason", d.Error)
	}
}

// TestDeployPicksTheHostsArch: of one version built for two targets, a
// deploy takes the one its hosts run; a release built for another target
// than a host runs is refused before anything moves, naming the host.
func TestDeployPicksTheHostsArch(t *testing.T) {
	ts := startServer(t, t.TempDir())
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "ferry.yaml"), []byte("app: web\nbuild:\n  command: \"true\"\ninclude: [bin/]\nprocesses:\n  web:\n    command: bin/serve\n"), 0o644)
	os.MkdirAll(filepath.Join(dir, "bin"), 0o755)
	os.WriteFile(filepath.Join(dir, "bin", "serve"), []byte("#!/bin/sh\nexec sleep 1000\n"), 0o755)
	sums := map[string]string{}
	for _, arch := range []string{"arm64", "amd64"} {
		res, err := artifact.Build(context.Background(), dir, artifact.BuildOptions{Version: "1.0.0", Arch: arch, OutDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(res.Path)
		var a api.Artifact
		if code, msg := ts.send("POST", api.PathArtifacts, ts.admin, bytes.NewReader(b), map[string]string{api.SHA256Header: res.SHA256, api.AppHeader: "web"}, &a); code != 201 || a.Arch != arch {
			t.Fatalf("publish %s: %d %s %+v", arch, code, msg, a)
		}
		sums[arch] = res.SHA256
	}
	arm := ts.join("arm-1", "edge")
	ts.must(http.StatusNoContent, "POST", api.PathReport, arm, api.Report{State: api.HostReport{Host: "arm-1", OS: "linux", Arch: "arm64", Apps: map[string]*api.AppStatus{}}}, nil)
	code, msg := ts.call("POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "web", Group: "edge", SHA256: sums["amd64"]}, nil)
	if code != http.StatusBadRequest || !strings.Contains(msg, "arm-1 (linux/arm64)") || !strings.Contains(msg, "linux/amd64") {
		t.Errorf("deploy of the amd64 build to an arm64 host: %d %q, want 400 naming the host and both targets", code, msg)
	}
	var d api.Deployment
	ts.must(201, "POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "web", Group: "edge", Version: "1.0.0"}, &d)
	if got := ts.waitDesired(arm, "web", "v1").Doc.Apps["web"].SHA256; got != sums["arm64"] {
		t.Errorf("the edge group (arm64) got %s, want the arm64 build %s (amd64 is %s, newer)", got, sums["arm64"], sums["amd64"])
	}
	var st api.Status
	ts.must(200, "GET", api.PathStatus, ts.admin, nil, &st)
	if len(st.Hosts) != 1 || st.Hosts[0].Arch != "arm64" || st.Hosts[0].OS != "linux" {
		t.Errorf("status does not show the host's os/arch: %+v", st.Hosts)
	}
}
