package server

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
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
	// The hook log, apart from the processes' logs.
	got, _ = collect(admin, client.LogQuery{App: "hello", Hooks: true})
	if len(got) != 1 || !strings.Contains(got[0], "no logs of hooks of hello") {
		t.Fatalf("hook logs before any hook ran: %q", got)
	}
	os.WriteFile(filepath.Join(apps, "hello", "hooks.log"), []byte("==== "+recent+" deploy v1 (sha256 0123456789ab)\nnpm ERR! code E404\n"), 0o640)
	got, _ = collect(admin, client.LogQuery{App: "hello", Hooks: true})
	if len(got) != 2 || got[1] != "web-1 hooks ERR! code E404" {
		t.Fatalf("logs --hooks: %q", got)
	}
	if got, _ = collect(admin, client.LogQuery{App: "hello"}); strings.Contains(strings.Join(got, "|"), "E404") {
		t.Fatalf("the processes' logs hold the hook log: %q", got)
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

// released is how soon what a closed or revoked request held must be let go.
const released = 5 * time.Second

// shipper is an agent's real client that counts its log uploads in flight.
type shipper struct {
	*client.Client
	open atomic.Int32
}

func (s *shipper) SendLogs(ctx context.Context, id string, r io.Reader) error {
	s.open.Add(1)
	defer s.open.Add(-1)
	return s.Client.SendLogs(ctx, id, r)
}

// shipHost is a host, web-1 in prod, that reports running hello and whose
// agent (logship on a shipper) answers log requests from the server at
// (which may be another than the one it joined) with the lines of
// web.1.log.
type shipHost struct {
	cred string
	log  string // the log file's path
	ship *shipper
}

func startShipHost(t *testing.T, ts, at *testServer) *shipHost {
	t.Helper()
	cred := ts.join("web-1", "prod")
	ts.report(cred, "web-1", "hello", "v1", "running", "")
	apps := t.TempDir()
	dir := filepath.Join(apps, "hello", "logs")
	os.MkdirAll(dir, 0o755)
	h := &shipHost{cred: cred, log: filepath.Join(dir, "web.1.log")}
	os.WriteFile(h.log, []byte(time.Now().UTC().Format(time.RFC3339Nano)+" out hello\n"), 0o644)
	c, err := client.New(at.srv.URL(), cred, at.srv.CASHA256())
	if err != nil {
		t.Fatal(err)
	}
	h.ship = &shipper{Client: c}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go logship.Serve(ctx, h.ship, apps, nil)
	return h
}

// openFiles counts this process's file descriptors open on path: a
// following logfile.Tail holds the live log open.
func openFiles(t *testing.T, path string) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd to count open files: %v", err)
	}
	n := 0
	for _, fd := range fds {
		if target, _ := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); target == path {
			n++
		}
	}
	return n
}

// follow starts `ferry logs hello -f` as c and waits for its first line;
// the lines after it come on lines, the answer of Logs on done.
func follow(t *testing.T, ctx context.Context, c *client.Client) (lines <-chan api.LogLine, done <-chan error) {
	t.Helper()
	ch := make(chan api.LogLine, 16)
	errc := make(chan error, 1)
	go func() {
		errc <- c.Logs(ctx, client.LogQuery{App: "hello", Lines: 1, Follow: true}, func(l api.LogLine) { ch <- l })
	}()
	select {
	case l := <-ch:
		if !strings.HasSuffix(l.Line, "out hello") {
			t.Fatalf("follow: first line %+v", l)
		}
	case err := <-errc:
		t.Fatalf("follow ended before its first line: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("follow: no first line within 10s")
	}
	return ch, errc
}

// waitReleased waits until the agent has no upload in flight and no tail
// holds its log open.
func (h *shipHost) waitReleased(t *testing.T, since time.Time, what string) {
	t.Helper()
	for {
		up, files := h.ship.open.Load(), openFiles(t, h.log)
		if up == 0 && files == 0 {
			return
		}
		if time.Since(since) > released {
			t.Fatalf("%s: after %s the agent still has %d log upload(s) in flight and %d tail(s) of %s open", what, released, up, files, h.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestLogsFollowClosed: when a follow's client goes away, the agent's
// upload and its tail of the log end within seconds, though the log stays
// quiet (nothing to write would tell the agent the reader is gone).
func TestLogsFollowClosed(t *testing.T) {
	ts := startServer(t, t.TempDir())
	h := startShipHost(t, ts, ts)
	admin, _ := client.New(ts.srv.URL(), ts.admin, ts.srv.CASHA256())
	ctx, stop := context.WithCancel(context.Background())
	_, done := follow(t, ctx, admin)
	if n := openFiles(t, h.log); n == 0 {
		t.Fatal("a following tail does not hold the log open: this test cannot see it end")
	}
	stop()
	<-done
	h.waitReleased(t, time.Now(), "client gone")
}
