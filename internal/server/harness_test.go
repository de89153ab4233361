package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/internal/agent"
	"github.com/ferrydeploy/ferry/internal/agent/health"
	"github.com/ferrydeploy/ferry/internal/artifact"
	"github.com/ferrydeploy/ferry/internal/tlsca"
)

// testServer is an in-process server on loopback with its data in a temp
// dir, and an HTTPS client pinned to its CA.
type testServer struct {
	t      *testing.T
	srv    *Server
	data   string
	admin  string
	client *http.Client
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	// closeState closes the state the test opened, so that another
	// server can open it again.
	closeState func()
}

func startServer(t *testing.T, data string, mod ...func(*Config)) *testServer {
	t.Helper()
	cfg := Config{Data: data, Listen: "127.0.0.1:0", HostLostAfter: 10 * time.Second}
	for _, m := range mod {
		m(&cfg)
	}
	closeState := openStores(t, &cfg)
	srv, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := ReadAdminToken(data)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{t: t, srv: srv, data: data, admin: admin, cancel: cancel, done: make(chan error, 1), closeState: closeState,
		client: &http.Client{Transport: &http.Transport{TLSClientConfig: tlsca.PinnedClient(srv.CASHA256())}}}
	go func() { ts.done <- srv.Run(ctx) }()
	t.Cleanup(ts.stop)
	return ts
}

// stop stops the server and waits for Run to return.
func (ts *testServer) stop() {
	ts.once.Do(func() {
		ts.cancel()
		select {
		case err := <-ts.done:
			if err != nil {
				ts.t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			ts.t.Error("server did not stop")
		}
		if ts.closeState != nil {
			ts.closeState()
		}
	})
}

// waitDesired waits until host's desired state has app at release.
func (ts *testServer) waitDesired(cred, app, release string) api.Desired {
	ts.t.Helper()
	var index uint64
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		d := ts.desired(cred, index, time.Second)
		if d.Doc.Apps[app].Release == release {
			return d
		}
		index = d.Index
	}
	ts.t.Fatalf("desired state never had %s %s", app, release)
	return api.Desired{}
}

// call sends a JSON request and decodes a 2xx answer into out; it returns
// the status and, for errors, the error body's message.
func (ts *testServer) call(method, path, token string, body, out any) (int, string) {
	ts.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	return ts.send(method, path, token, rd, nil, out)
}

func (ts *testServer) send(method, path, token string, body io.Reader, hdr map[string]string, out any) (int, string) {
	ts.t.Helper()
	code, b := ts.raw(method, path, token, body, hdr)
	if code >= 300 {
		var eb api.ErrorBody
		json.Unmarshal(b, &eb)
		return code, eb.Error.Message
	}
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			ts.t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
	return code, ""
}

// raw sends a request and returns the status and the whole body.
func (ts *testServer) raw(method, path, token string, body io.Reader, hdr map[string]string) (int, []byte) {
	ts.t.Helper()
	req, err := http.NewRequest(method, ts.srv.URL()+path, body)
	if err != nil {
		ts.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := ts.client.Do(req)
	if err != nil {
		ts.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// must is call that fails the test unless the answer is want.
func (ts *testServer) must(want int, method, path, token string, body, out any) {
	ts.t.Helper()
	if code, msg := ts.call(method, path, token, body, out); code != want {
		ts.t.Fatalf("%s %s: status %d (%s), want %d", method, path, code, msg, want)
	}
}

// token creates an API token and returns its secret.
func (ts *testServer) token(req api.TokenRequest) string {
	ts.t.Helper()
	var tc api.TokenCreated
	ts.must(http.StatusCreated, "POST", api.PathTokens, ts.admin, req, &tc)
	return tc.Secret
}

// join registers host in groups and returns its credential.
func (ts *testServer) join(host string, groups ...string) string {
	ts.t.Helper()
	var jt api.TokenCreated
	ts.must(http.StatusCreated, "POST", api.PathJoinTokens, ts.admin, api.JoinTokenRequest{Groups: groups}, &jt)
	var jr api.JoinResponse
	ts.must(http.StatusOK, "POST", api.PathAgentJoin, "", api.JoinRequest{Token: jt.Secret, Name: host}, &jr)
	return jr.Secret
}

// publish builds a small app at version and uploads it.
func (ts *testServer) publish(app, version string) api.Artifact {
	ts.t.Helper()
	return ts.publishWith(app, version, "")
}

// publishWith is publish with more ferry.yaml.
func (ts *testServer) publishWith(app, version, extra string) api.Artifact {
	ts.t.Helper()
	path, sum := buildAppWith(ts.t, app, version, extra)
	b, err := os.ReadFile(path)
	if err != nil {
		ts.t.Fatal(err)
	}
	var a api.Artifact
	code, msg := ts.send("POST", api.PathArtifacts, ts.admin, bytes.NewReader(b), map[string]string{api.SHA256Header: sum, api.AppHeader: app}, &a)
	if code != http.StatusCreated && code != http.StatusOK {
		ts.t.Fatalf("publish: %d %s", code, msg)
	}
	return a
}

// desired reads a host's desired state, blocking past index for up to wait.
func (ts *testServer) desired(cred string, index uint64, wait time.Duration) api.Desired {
	ts.t.Helper()
	var d api.Desired
	ts.must(http.StatusOK, "GET", fmt.Sprintf("%s?index=%d&wait=%s", api.PathDesired, index, wait), cred, nil, &d)
	return d
}

// report says, as host's agent, that it runs app at label in state st.
func (ts *testServer) report(cred, host, app, label, st, errMsg string) {
	ts.t.Helper()
	apps := map[string]*api.AppStatus{}
	if app != "" {
		n, _ := strconv.Atoi(strings.TrimPrefix(label, "v"))
		apps[app] = &api.AppStatus{Release: label + "-1a2b3c4d", Label: label, Number: n, State: ferry.AppState(st), Error: errMsg,
			Processes: []api.ProcessStatus{{Process: "web", Instance: 1, State: "running", Health: health.Healthy}}}
	}
	ts.must(http.StatusNoContent, "POST", api.PathReport, cred, api.Report{State: api.HostReport{Host: host, Apps: apps}}, nil)
}

// deployment polls a deployment until cond holds.
func (ts *testServer) waitDeployment(id, what string, cond func(api.Deployment) bool) api.Deployment {
	ts.t.Helper()
	var d api.Deployment
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		ts.must(http.StatusOK, "GET", "/v1/deployments/"+id, ts.admin, nil, &d)
		if cond(d) {
			return d
		}
		time.Sleep(20 * time.Millisecond)
	}
	ts.t.Fatalf("deployment %s: not %s: %+v", id, what, d)
	return d
}

// sim is a simulated agent: it follows its host's desired state and
// reports each app running healthy, or failed when fail says so.
type sim struct {
	ts   *testServer
	host string
	cred string
	fail func(app, label string) string
	stop chan struct{}
	wg   sync.WaitGroup
}

func (ts *testServer) sim(host, cred string, fail func(app, label string) string) *sim {
	s := &sim{ts: ts, host: host, cred: cred, fail: fail, stop: make(chan struct{})}
	s.wg.Add(1)
	go s.run()
	ts.t.Cleanup(s.close)
	return s
}

func (s *sim) close() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	s.wg.Wait()
}

func (s *sim) run() {
	defer s.wg.Done()
	var index uint64
	for {
		select {
		case <-s.stop:
			return
		default:
		}
		req, _ := http.NewRequest("GET", fmt.Sprintf("%s%s?index=%d&wait=200ms", s.ts.srv.URL(), api.PathDesired, index), nil)
		req.Header.Set("Authorization", "Bearer "+s.cred)
		resp, err := s.ts.client.Do(req)
		if err != nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		var d api.Desired
		json.NewDecoder(resp.Body).Decode(&d)
		resp.Body.Close()
		index = d.Index
		apps := map[string]*api.AppStatus{}
		for app, a := range d.Doc.Apps {
			as := &api.AppStatus{Release: a.Release + "-x", Label: a.Release, Number: a.Number, SHA256: a.SHA256, State: agent.AppRunning,
				Processes: []api.ProcessStatus{{Process: "web", Instance: 1, Health: health.Healthy}}}
			if s.fail != nil {
				if msg := s.fail(app, a.Release); msg != "" {
					as.State, as.Error, as.Rejected = agent.AppFailed, "release "+a.Release+"-x: "+msg, &a
					as.Failure = &ferry.Failure{Kind: ferry.FailStart, Release: a.Release + "-x", Message: msg}
				}
			}
			apps[app] = as
		}
		b, _ := json.Marshal(api.Report{State: api.HostReport{Host: s.host, Apps: apps}})
		req, _ = http.NewRequest("POST", s.ts.srv.URL()+api.PathReport, bytes.NewReader(b))
		req.Header.Set("Authorization", "Bearer "+s.cred)
		if resp, err := s.ts.client.Do(req); err == nil {
			resp.Body.Close()
		}
	}
}

// buildApp packs a small shell app and returns its path and sha256.
func buildApp(t *testing.T, name, version string) (string, string) {
	t.Helper()
	return buildAppWith(t, name, version, "")
}

// buildAppWith is buildApp with more ferry.yaml after the processes.
func buildAppWith(t *testing.T, name, version, extra string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	yaml := fmt.Sprintf("app: %s\nbuild:\n  command: \"true\"\ninclude: [bin/]\nprocesses:\n  web:\n    command: bin/serve\n%s", name, extra)
	os.WriteFile(filepath.Join(dir, "ferry.yaml"), []byte(yaml), 0o644)
	os.MkdirAll(filepath.Join(dir, "bin"), 0o755)
	os.WriteFile(filepath.Join(dir, "bin", "serve"), []byte("#!/bin/sh\nexec sleep 1000\n"), 0o755)
	res, err := artifact.Build(context.Background(), dir, artifact.BuildOptions{Version: version, OutDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return res.Path, res.SHA256
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
