//go:build unix

package graceful

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestNotifyAbstract checks READY=1 and STOPPING=1 reach a supervisor whose
// socket is in the abstract namespace, and that SIGINT drains like SIGTERM.
func TestNotifyAbstract(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the abstract socket namespace is Linux's")
	}
	name, msgs := notifySocket(t, fmt.Sprintf("@graceful-test-%d-%d", syscall.Getpid(), time.Now().UnixNano()))
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	c := startChild(t, []string{"NOTIFY_SOCKET=" + name, "GRACEFUL_TEST_ADDR=" + addr, "GRACEFUL_TEST_LAME_DUCK=-1s"})
	waitMsg(t, msgs, "READY=1", c)
	get(t, "http://"+addr+"/")
	c.signal(t, syscall.SIGINT)
	waitMsg(t, msgs, "STOPPING=1", c)
	if code := c.exit(t, 5*time.Second); code != 0 {
		t.Fatalf("exit code %d\n%s", code, c.out)
	}
}

// TestDrain sends SIGTERM while one request is in flight and another
// connection idles, and checks that nothing is lost: both get answers that
// say "Connection: close", new connections are refused, and the process
// exits 0 once the slow request is done.
func TestDrain(t *testing.T) {
	const lameDuck, slow = time.Second, 2 * time.Second
	name, msgs := notifySocket(t, "")
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	c := startChild(t, []string{"NOTIFY_SOCKET=" + name, "GRACEFUL_TEST_ADDR=" + addr, "GRACEFUL_TEST_LAME_DUCK=" + lameDuck.String()})
	waitMsg(t, msgs, "READY=1", c)

	idle := dialHTTP(t, addr)
	// ReadResponse turns "Connection: close" into resp.Close.
	if resp := idle.roundTrip(t, "/"); resp.Close {
		t.Fatal("Connection: close before the drain")
	}
	busy := dialHTTP(t, addr)
	busy.send(t, fmt.Sprintf("/slow?ms=%d", slow.Milliseconds()))
	c.waitOutput(t, "slow start")

	term := time.Now()
	c.signal(t, syscall.SIGTERM)
	waitMsg(t, msgs, "STOPPING=1", c)

	// The listener was ours alone, so closing it refuses newcomers.
	if conn, err := net.Dial("tcp", addr); err == nil {
		conn.Close()
		t.Error("a new connection was accepted after STOPPING=1")
	}
	// Within the lame duck, a request on an idle keep-alive connection is
	// answered, and told to go away.
	resp := idle.roundTrip(t, "/")
	if resp.StatusCode != http.StatusOK || !resp.Close {
		t.Errorf("idle connection during the lame duck: %s, close %v", resp.Status, resp.Close)
	}
	if n, err := idle.r.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("idle connection after Connection: close: read %d, %v; want EOF", n, err)
	}
	// The request in flight at the signal completes, and says close too,
	// since its header was written during the drain.
	resp = busy.receive(t)
	if resp.StatusCode != http.StatusOK || !resp.Close {
		t.Errorf("in-flight request: %s, close %v", resp.Status, resp.Close)
	}
	if code := c.exit(t, slow+5*time.Second); code != 0 {
		t.Fatalf("exit code %d\n%s", code, c.out)
	}
	if took := time.Since(term); took < lameDuck {
		t.Errorf("exited %v after SIGTERM, before the lame duck of %v ended", took, lameDuck)
	}
}

// TestSecondSignal checks that a second SIGTERM cuts a long drain short.
func TestSecondSignal(t *testing.T) {
	name, msgs := notifySocket(t, "")
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	c := startChild(t, []string{"NOTIFY_SOCKET=" + name, "GRACEFUL_TEST_ADDR=" + addr, "GRACEFUL_TEST_LAME_DUCK=1m"})
	waitMsg(t, msgs, "READY=1", c)
	c.signal(t, syscall.SIGTERM)
	waitMsg(t, msgs, "STOPPING=1", c)
	c.signal(t, syscall.SIGTERM)
	if code := c.exit(t, 5*time.Second); code != 1 {
		t.Fatalf("exit code %d after a second signal, want 1\n%s", code, c.out)
	}
	if !strings.Contains(c.out.String(), ErrForced.Error()) {
		t.Errorf("output lacks %q:\n%s", ErrForced, c.out)
	}
}

// TestPort checks that $PORT wins over the address the app asks for.
func TestPort(t *testing.T) {
	name, msgs := notifySocket(t, "")
	port := freePort(t)
	c := startChild(t, []string{"NOTIFY_SOCKET=" + name, fmt.Sprintf("PORT=%d", port), "GRACEFUL_TEST_ADDR=127.0.0.1:1"})
	waitMsg(t, msgs, "READY=1", c)
	get(t, fmt.Sprintf("http://127.0.0.1:%d/", port))
}

// TestReusePort runs two copies on one address, as when an app is upgraded
// by hand: both bind, and the second serves on once the first has gone.
func TestReusePort(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	var cs [2]*child
	var notes [2]<-chan string
	for i := range cs {
		var name string
		name, notes[i] = notifySocket(t, "")
		cs[i] = startChild(t, []string{"NOTIFY_SOCKET=" + name, "GRACEFUL_TEST_ADDR=" + addr, "GRACEFUL_TEST_LAME_DUCK=-1s"})
		waitMsg(t, notes[i], "READY=1", cs[i])
	}
	cs[0].signal(t, syscall.SIGTERM)
	if code := cs[0].exit(t, 5*time.Second); code != 0 {
		t.Fatalf("first copy: exit code %d\n%s", code, cs[0].out)
	}
	if got, want := strings.TrimSpace(get(t, "http://"+addr+"/")), fmt.Sprint(cs[1].cmd.Process.Pid); got != want {
		t.Errorf("served by pid %s, want the second copy %s", got, want)
	}
}

// TestServeContext runs a Server in process: Ready holds READY=1 back, h2c
// is served, and the end of ctx drains and returns nil.
func TestServeContext(t *testing.T) {
	name, msgs := notifySocket(t, "")
	t.Setenv("NOTIFY_SOCKET", name)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	hooked := make(chan struct{})
	s := &Server{
		HTTP: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, r.Proto)
		})},
		LameDuck:   -1,
		Ready:      ready,
		OnShutdown: []func(context.Context){func(context.Context) { close(hooked) }},
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, l) }()

	// Prior-knowledge HTTP/2 over plain TCP.
	h2c := &http.Client{Transport: &http.Transport{
		Protocols: func() *http.Protocols {
			var p http.Protocols
			p.SetUnencryptedHTTP2(true)
			return &p
		}(),
		TLSClientConfig: &tls.Config{},
	}}
	resp, err := h2c.Get("http://" + l.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "HTTP/2.0" {
		t.Errorf("served %q, want HTTP/2.0", body)
	}
	select {
	case m := <-msgs:
		t.Fatalf("%q before Ready was closed", m)
	default:
	}
	close(ready)
	waitMsg(t, msgs, "READY=1", nil)
	h2c.CloseIdleConnections() // else the GOAWAY waits a second for us
	cancel()
	waitMsg(t, msgs, "STOPPING=1", nil)
	select {
	case err := <-served:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return within 10s of the end of ctx")
	}
	select {
	case <-hooked:
	default:
		t.Error("Serve returned before its OnShutdown hook ran")
	}
}

// TestReadyUndeliverable checks that a supervisor socket nobody listens on
// is logged, not fatal: the app serves on.
func TestReadyUndeliverable(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", t.TempDir()+"/nobody")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuffer{}
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	s := &Server{HTTP: &http.Server{Handler: ok, ErrorLog: log.New(logs, "", 0)}, LameDuck: -1}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, l) }()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "notify READY=1") {
		if time.Now().After(deadline) {
			t.Fatalf("no log of the failed READY=1 within 10s: %q", logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	get(t, "http://"+l.Addr().String()+"/")
	cancel()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}

// httpConn is one client connection driven by hand, so the test controls
// exactly when requests go out on it.
type httpConn struct {
	conn net.Conn
	r    *bufio.Reader
}

func dialHTTP(t *testing.T, addr string) *httpConn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	return &httpConn{conn: conn, r: bufio.NewReader(conn)}
}

func (c *httpConn) send(t *testing.T, path string) {
	t.Helper()
	if _, err := fmt.Fprintf(c.conn, "GET %s HTTP/1.1\r\nHost: test\r\n\r\n", path); err != nil {
		t.Fatal(err)
	}
}

func (c *httpConn) receive(t *testing.T) *http.Response {
	t.Helper()
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		t.Fatalf("reading a response: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

func (c *httpConn) roundTrip(t *testing.T, path string) *http.Response {
	t.Helper()
	c.send(t, path)
	return c.receive(t)
}
