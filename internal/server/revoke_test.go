package server

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/client"
	"github.com/ferrydeploy/ferry/internal/agent/logship"
	"github.com/ferrydeploy/ferry/internal/state/etcd"
	"github.com/ferrydeploy/ferry/internal/state/etcd/etcdtest"
	"github.com/ferrydeploy/ferry/internal/testenv"
)

// tokenID is the id of the token whose secret is tok.
func tokenID(tok string) string {
	id, _, _ := parseToken(tok)
	return id
}

// TestRevokeEndsLogStream: a viewer's `logs -f` ends within seconds of
// its token's revoke or expiry, with an error that says why, and the
// agent's side with it.
func TestRevokeEndsLogStream(t *testing.T) {
	for _, tc := range []struct {
		name string
		ttl  time.Duration
		end  func(ts *testServer, tok string) time.Time // when the token ended
		want string
	}{
		{"revoked", 0, func(ts *testServer, tok string) time.Time {
			ts.must(http.StatusNoContent, "DELETE", "/v1/tokens/"+tokenID(tok), ts.admin, nil, nil)
			return time.Now()
		}, "revoked"},
		{"expired", 3 * time.Second, func(ts *testServer, tok string) time.Time {
			var me api.Token
			ts.must(http.StatusOK, "GET", api.PathWhoami, tok, nil, &me)
			return me.Expires
		}, "expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, t.TempDir())
			h := startShipHost(t, ts, ts)
			tok := ts.token(api.TokenRequest{Name: "watcher", Role: api.RoleViewer, TTL: tc.ttl})
			viewer, _ := client.New(ts.srv.URL(), tok, ts.srv.CASHA256())
			_, done := follow(t, context.Background(), viewer)
			ended := tc.end(ts, tok)
			select {
			case err := <-done:
				if ferry.ErrorCode(err) != ferry.EUNAUTH || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("the stream ended with %v (%s), want an unauthorized error saying the token %s", err, ferry.ErrorCode(err), tc.want)
				}
			case <-time.After(released + time.Until(ended)):
				t.Fatalf("a token's logs -f still streams %s after it %s", released, tc.want)
			}
			h.waitReleased(t, ended, "token "+tc.want)
		})
	}
}

// pending is a request started and not answered yet.
type pending struct {
	name string
	done chan answer
}

type answer struct {
	status int
	body   string
	at     time.Time
}

// start sends a GET as tok in the background.
func (ts *testServer) start(name, path, tok string) pending {
	p := pending{name: name, done: make(chan answer, 1)}
	go func() {
		req, _ := http.NewRequest("GET", ts.srv.URL()+path, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := ts.client.Do(req)
		if err != nil {
			p.done <- answer{body: err.Error(), at: time.Now()}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		p.done <- answer{status: resp.StatusCode, body: string(b), at: time.Now()}
	}()
	return p
}

// waitBlocked waits until a blocking desired query of host waits in the
// server's mirror.
func (ts *testServer) waitBlocked(host string) {
	ts.t.Helper()
	m := ts.srv.desiredMirror
	testenv.WaitFor(ts.t, "a blocking query of "+host+" to wait", 10*time.Second, func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		_, waiting := m.changed[prefixDesired+host]
		return waiting
	})
}

// TestRevokeEndsBlockingQueries: an agent credential that is revoked, or
// deleted because its host joined again, ends that credential's pending
// blocking desired-state query and log long-poll within seconds with 401,
// and no secret goes out to it even when its desired state changes right
// after.
func TestRevokeEndsBlockingQueries(t *testing.T) {
	const secret = "s3cr3t-for-prod-only"
	for _, tc := range []struct {
		name string
		end  func(ts *testServer, cred string)
	}{
		{"revoked", func(ts *testServer, cred string) {
			ts.must(http.StatusNoContent, "DELETE", "/v1/tokens/"+tokenID(cred), ts.admin, nil, nil)
		}},
		{"host replaced", func(ts *testServer, _ string) {
			jt := ts.joinToken(api.JoinTokenRequest{Groups: []string{"prod"}, Replace: "web-1"})
			ts.must(http.StatusOK, "POST", api.PathAgentJoin, "", api.JoinRequest{Token: jt.Secret, Name: "web-1"}, nil)
		}},
		{"host removed", func(ts *testServer, _ string) {
			ts.must(http.StatusNoContent, "DELETE", "/v1/hosts/web-1", ts.admin, nil, nil)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, t.TempDir())
			cred := ts.join("web-1", "prod")
			ts.publish("web", "1.0.0")
			ts.must(http.StatusOK, "PATCH", "/v1/apps/web/config", ts.admin, api.ConfigChange{Group: "prod", Set: map[string]string{"API_KEY": secret}, Secret: true}, nil)
			idx := ts.desired(cred, 0, 0).Index
			queries := []pending{
				ts.start("desired", fmt.Sprintf("%s?index=%d&wait=1m", api.PathDesired, idx), cred),
				ts.start("log requests", api.PathAgentLogs+"?wait=1m", cred),
			}
			ts.waitBlocked("web-1")
			ended := time.Now()
			tc.end(ts, cred)
			// What would wake the query with a secret in it.
			ts.must(http.StatusCreated, "POST", api.PathDeployments, ts.admin, api.DeployRequest{App: "web", Group: "prod", Strategy: "all"}, nil)
			for _, q := range queries {
				select {
				case a := <-q.done:
					if a.status != http.StatusUnauthorized || strings.Contains(a.body, secret) {
						t.Errorf("%s: %d %s, want 401 without the secret", q.name, a.status, a.body)
					}
					if d := a.at.Sub(ended); d > released {
						t.Errorf("%s: answered %s after the credential ended, want within %s", q.name, d, released)
					}
				case <-time.After(released + time.Until(ended)):
					t.Errorf("%s: still pending %s after the credential ended", q.name, released)
				}
			}
		})
	}
}

// TestRevokeOnAnotherServer: servers sharing one etcd state end the
// streams and blocking queries of a token revoked on any of them.
func TestRevokeOnAnotherServer(t *testing.T) {
	cluster := etcdtest.Start(t, 1)
	open := func() *etcd.Store {
		st, err := etcd.Open(context.Background(), etcd.Options{Endpoints: cluster.Endpoints(), Prefix: "/ferry-" + t.Name() + "/"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	dataA, dataB := t.TempDir(), t.TempDir()
	stA, stB := open(), open()
	a := startServer(t, dataA, func(c *Config) { c.State = stA })
	for _, f := range []string{SecretsKeyFile, AdminTokenFile} {
		b, err := os.ReadFile(filepath.Join(dataA, f))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dataB, f), b, 0o600)
	}
	b := startServer(t, dataB, func(c *Config) { c.State = stB })

	h := startShipHost(t, a, b)
	viewerTok := a.token(api.TokenRequest{Name: "watcher", Role: api.RoleViewer})
	viewer, _ := client.New(b.srv.URL(), viewerTok, b.srv.CASHA256())
	_, done := follow(t, context.Background(), viewer)
	idx := b.desired(h.cred, 0, 0).Index
	query := b.start("desired", fmt.Sprintf("%s?index=%d&wait=1m", api.PathDesired, idx), h.cred)
	b.waitBlocked("web-1")

	revoked := time.Now()
	a.must(http.StatusNoContent, "DELETE", "/v1/tokens/"+tokenID(viewerTok), a.admin, nil, nil)
	a.must(http.StatusNoContent, "DELETE", "/v1/tokens/"+tokenID(h.cred), a.admin, nil, nil)
	select {
	case err := <-done:
		if ferry.ErrorCode(err) != ferry.EUNAUTH {
			t.Errorf("the stream on B of a token revoked on A ended with %v, want unauthorized", err)
		}
	case <-time.After(released):
		t.Fatalf("a token revoked on A still streams logs from B %s after", released)
	}
	select {
	case ans := <-query.done:
		if ans.status != http.StatusUnauthorized {
			t.Errorf("the blocking query on B of a credential revoked on A: %d %s, want 401", ans.status, ans.body)
		}
	case <-time.After(released + time.Until(revoked)):
		t.Fatalf("the blocking query on B of a credential revoked on A still waits %s after", released)
	}
	h.waitReleased(t, revoked, "tokens revoked on another server")
}

// TestRevokeEndsAgentUpload: a host's credential revoked while its agent
// streams a follow ends the agent's upload with 401 and its tail, and the
// reader is told why the host's lines stop.
func TestRevokeEndsAgentUpload(t *testing.T) {
	ts := startServer(t, t.TempDir())
	cred := ts.join("web-1", "prod")
	ts.report(cred, "web-1", "hello", "v1", "running", "")
	apps := t.TempDir()
	dir := filepath.Join(apps, "hello", "logs")
	os.MkdirAll(dir, 0o755)
	log := filepath.Join(dir, "web.1.log")
	os.WriteFile(log, []byte(time.Now().UTC().Format(time.RFC3339Nano)+" out hello\n"), 0o644)
	agentC, _ := client.New(ts.srv.URL(), cred, ts.srv.CASHA256())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// logship.Serve, with each answer's error kept.
	answers := make(chan error, 4)
	go func() {
		for ctx.Err() == nil {
			reqs, err := agentC.LogRequests(ctx, time.Minute)
			if err != nil {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			for _, rq := range reqs {
				go func() { answers <- logship.Answer(ctx, agentC, apps, rq) }()
			}
		}
	}()
	admin, _ := client.New(ts.srv.URL(), ts.admin, ts.srv.CASHA256())
	lines, done := follow(t, context.Background(), admin)
	revoked := time.Now()
	ts.must(http.StatusNoContent, "DELETE", "/v1/tokens/"+tokenID(cred), ts.admin, nil, nil)
	select {
	case err := <-answers:
		if ferry.ErrorCode(err) != ferry.EUNAUTH {
			t.Errorf("the agent's answer ended with %v (%s), want unauthorized", err, ferry.ErrorCode(err))
		}
	case <-time.After(released):
		t.Fatalf("the agent still streams %s after its credential was revoked", released)
	}
	select {
	case l := <-lines:
		if l.Host != "web-1" || !strings.Contains(l.Error, "revoked") {
			t.Errorf("the reader got %+v, want web-1's error saying its credential was revoked", l)
		}
	case <-time.After(released):
		t.Errorf("the reader was not told why web-1's lines stopped")
	}
	if err := <-done; err != nil {
		t.Errorf("the reader's stream: %v", err)
	}
	for openFiles(t, log) > 0 {
		if time.Since(revoked) > released {
			t.Fatalf("the agent's tail still holds %s open %s after", log, released)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
