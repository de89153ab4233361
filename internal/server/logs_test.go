package server

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/client"
	"github.com/ferrydeploy/ferry/internal/agent/logship"
)

// TestLogs: a client's request for logs reaches the agent of each host
// that runs the app, through the server, and the lines come back; lines
// older than since are left out; a follow ends, on the agent too, when the
// client goes away; roles and scopes decide who may read.
func TestLogs(t *testing.T) {
	ts := startServer(t, t.TempDir())
	cred := ts.join("web-1", "prod")
	ts.report(cred, "web-1", "hello", "v1", "running", "")
	apps := t.TempDir()
	logs := filepath.Join(apps, "hello", "logs")
	os.MkdirAll(logs, 0o755)
	old := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339Nano)
	recent := time.Now().UTC().Format(time.RFC3339Nano)
	os.WriteFile(filepath.Join(logs, "web.1.log"), []byte(old+" out an old line\n"+recent+" out a recent line\n"), 0o644)
	os.WriteFile(filepath.Join(logs, "worker.1.log"), []byte(recent+" out working\n"), 0o644)

	agentC, err := client.New(ts.srv.URL(), cred, ts.srv.CASHA256())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go logship.Serve(ctx, agentC, apps, nil)

	admin, _ := client.New(ts.srv.URL(), ts.admin, ts.srv.CASHA256())
	collect := func(c *client.Client, q client.LogQuery) ([]string, error) {
		var got []string
		err := c.Logs(context.Background(), q, func(l api.LogLine) {
			// Without the timestamp, whose length varies (RFC3339Nano
			// drops trailing zeros).
			_, text, _ := strings.Cut(l.Line, " ")
			got = append(got, fmt.Sprintf("%s %s %s%s", l.Host, l.Instance, l.Error, text))
		})
		return got, err
	}
	got, err := collect(admin, client.LogQuery{App: "hello"})
	if err != nil || strings.Join(got, "|") != "web-1 web.1 out an old line|web-1 web.1 out a recent line|web-1 worker.1 out working" {
		t.Fatalf("logs: %q, %v", got, err)
	}
	got, _ = collect(admin, client.LogQuery{App: "hello", Process: "web", Since: 10 * time.Minute})
	if strings.Join(got, "|") != "web-1 web.1 out a recent line" {
		t.Fatalf("logs --process web --since 10m: %q", got)
	}
	got, _ = collect(admin, client.LogQuery{App: "hello", Process: "nope"})
	if len(got) != 1 || !strings.Contains(got[0], "no logs of hello nope") {
		t.Fatalf("logs of a process without logs: %q", got)
	}

	// Follow, then go away: the agent's side ends too.
	fctx, stop := context.WithCancel(context.Background())
	lines := make(chan api.LogLine, 10)
	done := make(chan error, 1)
	go func() {
		done <- admin.Logs(fctx, client.LogQuery{App: "hello", Process: "web", Lines: 1, Follow: true}, func(l api.LogLine) { lines <- l })
	}()
	if l := <-lines; !strings.HasSuffix(l.Line, "a recent line") {
		t.Fatalf("follow: first line %+v", l)
	}
	f, _ := os.OpenFile(filepath.Join(logs, "web.1.log"), os.O_APPEND|os.O_WRONLY, 0)
	fmt.Fprintf(f, "%s out appended\n", time.Now().UTC().Format(time.RFC3339Nano))
	f.Close()
	select {
	case l := <-lines:
		if !strings.HasSuffix(l.Line, "appended") {
			t.Fatalf("follow: %+v", l)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("follow: an appended line did not come within 10s")
	}
	stop()
	<-done
	deadline := time.Now().Add(10 * time.Second)
	for {
		ts.srv.logHub.mu.Lock()
		n := len(ts.srv.logHub.byID)
		ts.srv.logHub.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d log sessions left 10s after the client went away", n)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Who may read.
	for name, tc := range map[string]struct {
		token string
		path  string
		want  int
	}{
		"no token":                     {"", "/v1/logs?app=hello", 401},
		"agent reads logs":             {cred, "/v1/logs?app=hello", 403},
		"viewer of other app":          {ts.token(api.TokenRequest{Name: "o", Role: api.RoleViewer, Apps: []string{"other"}}), "/v1/logs?app=hello", 403},
		"viewer of other group":        {ts.token(api.TokenRequest{Name: "g", Role: api.RoleViewer, Groups: []string{"staging"}}), "/v1/logs?app=hello", 404}, // its hosts are hidden from it
		"user asks for agent requests": {ts.admin, "/v1/agent/logs?wait=1s", 403},
		"bad since":                    {ts.admin, "/v1/logs?app=hello&since=soon", 400},
		"app nobody runs":              {ts.admin, "/v1/logs?app=nothing", 404},
	} {
		if code, msg := ts.call("GET", tc.path, tc.token, nil, nil); code != tc.want {
			t.Errorf("%s: %d (%s), want %d", name, code, msg, tc.want)
		}
	}
	if code, _ := ts.call("POST", "/v1/agent/logs/nope", cred, nil, nil); code != 404 {
		t.Errorf("lines for an unknown request: %d, want 404", code)
	}
}
