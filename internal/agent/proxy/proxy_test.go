package proxy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry/internal/testenv"
)

// testBackend is an app instance on loopback that counts the connections
// it has open, as the app would see them.
type testBackend struct {
	addr   string
	srv    *http.Server
	open   atomic.Int64
	served atomic.Int64
}

func startBackend(t testing.TB, h http.HandlerFunc) *testBackend {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &testBackend{addr: l.Addr().String()}
	b.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b.served.Add(1)
			h(w, r)
		}),
		ConnState: func(_ net.Conn, s http.ConnState) {
			switch s {
			case http.StateNew:
				b.open.Add(1)
			case http.StateClosed, http.StateHijacked:
				b.open.Add(-1)
			}
		},
	}
	go b.srv.Serve(l)
	t.Cleanup(func() { b.srv.Close() })
	return b
}

// startProxy serves a new Proxy on loopback and returns it with its base URL.
func startProxy(t testing.TB, opt Options) (*Proxy, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := New(opt)
	served := make(chan error, 1)
	go func() { served <- p.Serve(l) }()
	t.Cleanup(func() {
		// A connection the client dialed but never used counts as busy
		// for 5 s in http.Server.Shutdown; drop the ones tests leave.
		http.DefaultClient.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return p, "http://" + l.Addr().String()
}

// echo answers a POST with its body and anything else with "ok". It reads
// the whole body first: a Go server that starts its response discards the
// rest of the request.
func echo(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost {
		body, _ := io.ReadAll(r.Body)
		w.Write(body)
		return
	}
	io.WriteString(w, "ok")
}

// get returns the status and body of a GET, or fails the test.
func get(t testing.TB, c *http.Client, url string) (int, string) {
	t.Helper()
	res, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, string(body)
}

func TestBalancesRoundRobin(t *testing.T) {
	p, url := startProxy(t, Options{})
	names := []string{"a", "b", "c"}
	for _, name := range names {
		b := startBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) })
		p.Add(b.addr)
	}
	counts := map[string]int{}
	for range 300 {
		status, body := get(t, http.DefaultClient, url)
		if status != http.StatusOK {
			t.Fatalf("status %d", status)
		}
		counts[body]++
	}
	for _, name := range names {
		if counts[name] != 100 {
			t.Errorf("backend %s served %d of 300 requests, want 100: %v", name, counts[name], counts)
		}
	}
}

// TestSwitchUnderLoad is the upgrade the agent does, 200 times, under
// keep-alive GETs and POSTs and new-connection requests: not one may fail.
func TestSwitchUnderLoad(t *testing.T) {
	p, url := startProxy(t, Options{})
	old := startBackend(t, echo)
	p.Add(old.addr)

	ctx, stop := context.WithCancel(context.Background())
	var (
		wg       sync.WaitGroup
		requests atomic.Int64
		mu       sync.Mutex
		failures []string
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		failures = append(failures, fmt.Sprintf(format, args...))
	}
	load := func(c *http.Client, post bool, id int) {
		for n := 0; ctx.Err() == nil; n++ {
			method, want := http.MethodGet, "ok"
			var body io.Reader
			if post {
				method, want = http.MethodPost, strings.Repeat(fmt.Sprintf("%d-%d;", id, n), 200)
				body = strings.NewReader(want)
			}
			req, _ := http.NewRequestWithContext(ctx, method, url, body)
			res, err := c.Do(req)
			if err != nil {
				if ctx.Err() == nil {
					fail("%s: %v", method, err)
				}
				return
			}
			got, err := io.ReadAll(res.Body)
			res.Body.Close()
			switch {
			case err != nil && ctx.Err() != nil:
				return
			case err != nil:
				fail("%s: reading body: %v", method, err)
			case res.StatusCode != http.StatusOK || string(got) != want:
				fail("%s: status %d, body %d bytes %.40q, want %d bytes", method, res.StatusCode, len(got), got, len(want))
			}
			requests.Add(1)
		}
	}
	keepAlive := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	defer keepAlive.CloseIdleConnections()
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for i := range 4 {
		wg.Go(func() { load(keepAlive, false, i) })
		wg.Go(func() { load(keepAlive, true, i) })
	}
	wg.Go(func() { load(fresh, false, 100) })
	wg.Go(func() { load(fresh, true, 101) })

	for range 200 {
		next := startBackend(t, echo)
		p.Add(next.addr)
		testenv.WaitFor(t, "the new backend to serve", 5*time.Second, func() bool { return next.served.Load() > 0 })
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := p.Remove(rctx, old.addr)
		cancel()
		if err != nil {
			t.Fatalf("Remove: %v", err)
		}
		// Abruptly, as a SIGKILL would: the proxy must hold nothing of it.
		old.srv.Close()
		old = next
	}
	stop()
	wg.Wait()
	for _, f := range failures {
		t.Error(f)
	}
	t.Logf("%d requests over 200 switches, %d failed", requests.Load(), len(failures))
}

func TestForwardedHeaders(t *testing.T) {
	p, url := startProxy(t, Options{})
	seen := make(chan http.Header, 1)
	hosts := make(chan string, 1)
	b := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
		hosts <- r.Host
	})
	p.Add(b.addr)

	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Host = "app.example"
	req.Header.Set("X-Forwarded-For", "203.0.113.7")
	req.Header.Set("Connection", "X-Hop")
	req.Header.Set("X-Hop", "must not pass")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	h := <-seen
	for key, want := range map[string]string{
		"X-Forwarded-For":   "203.0.113.7, 127.0.0.1",
		"X-Forwarded-Proto": "http",
		"X-Forwarded-Host":  "app.example",
		"X-Hop":             "",
	} {
		if got := h.Get(key); got != want {
			t.Errorf("%s = %q, want %q", key, got, want)
		}
	}
	if host := <-hosts; host != "app.example" {
		t.Errorf("Host = %q, want the client's", host)
	}
}

func TestH2CPriorKnowledge(t *testing.T) {
	p, url := startProxy(t, Options{})
	b := startBackend(t, echo)
	p.Add(b.addr)

	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	c := &http.Client{Transport: &http.Transport{Protocols: &protocols}}
	// Else the proxy's Shutdown waits a second for the client to hang up.
	defer c.CloseIdleConnections()
	res, err := c.Post(url, "text/plain", strings.NewReader("over h2c"))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	got, _ := io.ReadAll(res.Body)
	if res.ProtoMajor != 2 || res.StatusCode != http.StatusOK || string(got) != "over h2c" {
		t.Errorf("got %s %d %q, want HTTP/2.0 200 %q", res.Proto, res.StatusCode, got, "over h2c")
	}
}

func TestNoBackendWait(t *testing.T) {
	t.Run("backend added in time", func(t *testing.T) {
		p, url := startProxy(t, Options{NoBackendWait: 5 * time.Second})
		res := getAsync(url)
		testenv.WaitFor(t, "the request to wait", 5*time.Second, func() bool { return p.waiting.Load() == 1 })
		p.Add(startBackend(t, echo).addr)
		if r := <-res; r.err != nil || r.status != http.StatusOK {
			t.Errorf("got %+v, want 200", r)
		}
	})
	t.Run("none added", func(t *testing.T) {
		const wait = 100 * time.Millisecond
		_, url := startProxy(t, Options{NoBackendWait: wait})
		start := time.Now()
		status, _ := get(t, http.DefaultClient, url)
		if status != http.StatusServiceUnavailable {
			t.Errorf("status %d, want 503", status)
		}
		if d := time.Since(start); d < wait {
			t.Errorf("answered after %v, before NoBackendWait %v", d, wait)
		}
	})
}

// syncBuffer is a log sink the proxy's goroutines may write concurrently.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// deadAddr returns a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestDialFailureRetriedElsewhere(t *testing.T) {
	var logs syncBuffer
	p, url := startProxy(t, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	dead := deadAddr(t)
	p.Add(dead) // first in rotation: the first request tries it
	p.Add(startBackend(t, echo).addr)

	for i := range 6 {
		want := fmt.Sprintf("post %d", i)
		res, err := http.Post(url, "text/plain", strings.NewReader(want))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || string(got) != want {
			t.Errorf("POST %d: status %d, body %q", i, res.StatusCode, got)
		}
	}
	if !strings.Contains(logs.String(), "backend="+dead) {
		t.Errorf("no log of the dial failure naming the dead backend:\n%s", logs.String())
	}
}

func TestAllBackendsDeadIs502(t *testing.T) {
	p, url := startProxy(t, Options{})
	p.Add(deadAddr(t))
	res, err := http.Post(url, "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusBadGateway {
		t.Errorf("status %d, want 502", res.StatusCode)
	}
}

func TestShutdownAnswersWaitingRequests(t *testing.T) {
	p := New(Options{NoBackendWait: time.Minute})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve(l) }()
	res := getAsync("http://" + l.Addr().String())
	testenv.WaitFor(t, "the request to wait", 5*time.Second, func() bool { return p.waiting.Load() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if r := <-res; r.err != nil || r.status != http.StatusServiceUnavailable {
		t.Errorf("got %+v, want 503", r)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve after Shutdown: %v", err)
	}
}

func BenchmarkProxyGET(b *testing.B) {
	be := startBackend(b, echo)
	p, url := startProxy(b, Options{})
	p.Add(be.addr)
	for _, bc := range []struct{ name, url string }{
		{"direct", "http://" + be.addr},
		{"proxy", url},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			defer c.CloseIdleConnections()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					res, err := c.Get(bc.url)
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, res.Body)
					res.Body.Close()
				}
			})
		})
	}
}

// TestRetryAfterSend: once a request may have reached an app, only an
// idempotent one is sent again.
func TestRetryAfterSend(t *testing.T) {
	p, url := startProxy(t, Options{})
	crash := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		// Dies mid-request: the connection closes with no response.
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
		}
	})
	ok := startBackend(t, echo)
	p.Add(crash.addr) // first in rotation
	p.Add(ok.addr)

	if status, body := get(t, http.DefaultClient, url); status != http.StatusOK || body != "ok" {
		t.Errorf("GET: %d %q, want it retried on the live backend", status, body)
	}
	// Round robin now points at the crashing backend again.
	res, err := http.Post(url, "text/plain", strings.NewReader(""))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusBadGateway {
		t.Errorf("POST: status %d, want 502", res.StatusCode)
	}
	if crash.served.Load() != 2 || ok.served.Load() != 1 {
		t.Errorf("crashing backend saw %d requests, live one %d; want 2 and 1", crash.served.Load(), ok.served.Load())
	}
}

// TestLameDuckClosesKeepAlives: during the lame duck every response tells
// its client to close, so no client reuses a connection the proxy is about
// to close.
func TestLameDuckClosesKeepAlives(t *testing.T) {
	b := startBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	p, base := startProxy(t, Options{})
	p.Add(b.addr)
	get := func() *http.Response {
		resp, err := http.Get(base + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	if get().Close {
		t.Fatal("a response before the lame duck asked to close the connection")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.LameDuck(ctx, time.Minute); close(done) }()
	testenv.WaitFor(t, "responses during the lame duck to say Connection: close", 5*time.Second, func() bool { return get().Close })
	cancel()
	<-done
}
