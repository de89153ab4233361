package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry/internal/testenv"
)

type result struct {
	status int
	body   string
	err    error
}

// getAsync GETs url on a goroutine.
func getAsync(url string) <-chan result {
	ch := make(chan result, 1)
	go func() {
		res, err := http.Get(url)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		ch <- result{status: res.StatusCode, body: string(body), err: err}
	}()
	return ch
}

func TestRemoveWaitsForInFlight(t *testing.T) {
	p, url := startProxy(t, Options{})
	started := make(chan struct{})
	var finished atomic.Bool
	b := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		close(started)
		time.Sleep(300 * time.Millisecond) // a slow request, not a wait for state
		io.WriteString(w, "done")
		finished.Store(true)
	})
	p.Add(b.addr)
	res := getAsync(url)
	<-started

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Remove(ctx, b.addr); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if !finished.Load() {
		t.Error("Remove returned before the request in flight finished")
	}
	if n := p.InFlight(b.addr); n != 0 {
		t.Errorf("InFlight = %d after Remove, want 0", n)
	}
	if r := <-res; r.err != nil || r.status != http.StatusOK || r.body != "done" {
		t.Errorf("request in flight during Remove: %+v", r)
	}
}

func TestRemoveCutShort(t *testing.T) {
	p, url := startProxy(t, Options{})
	started, release := make(chan struct{}), make(chan struct{})
	b := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		io.WriteString(w, "late")
	})
	p.Add(b.addr)
	res := getAsync(url)
	<-started

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.Remove(ctx, b.addr); !errors.Is(err, context.Canceled) {
		t.Fatalf("Remove with a done ctx = %v, want context.Canceled", err)
	}
	if n := p.InFlight(b.addr); n != 1 {
		t.Errorf("InFlight = %d, want the request still in flight", n)
	}
	close(release)
	// The request goes on; it is the instance's shutdown that ends it.
	if r := <-res; r.err != nil || r.status != http.StatusOK || r.body != "late" {
		t.Errorf("request in flight: %+v", r)
	}
	testenv.WaitFor(t, "the backend's connections to close", 5*time.Second, func() bool { return b.open.Load() == 0 })
}

func TestRemoveClosesIdleConnections(t *testing.T) {
	p, url := startProxy(t, Options{})
	b := startBackend(t, echo)
	other := startBackend(t, echo)
	p.Add(b.addr)
	p.Add(other.addr)

	// Concurrent requests, so the proxy holds several connections to b.
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for range 10 {
				if status, _ := get(t, http.DefaultClient, url); status != http.StatusOK {
					t.Errorf("status %d", status)
				}
			}
		})
	}
	wg.Wait()
	if b.open.Load() == 0 || other.open.Load() == 0 {
		t.Fatalf("backends have %d and %d connections open; want keep-alive ones", b.open.Load(), other.open.Load())
	}
	kept := other.open.Load()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Remove(ctx, b.addr); err != nil {
		t.Fatal(err)
	}
	// The backend learns of each close when its read returns: poll.
	testenv.WaitFor(t, "the removed backend's connections to close", 5*time.Second, func() bool { return b.open.Load() == 0 })
	if n := other.open.Load(); n != kept {
		t.Errorf("the other backend's connections went from %d to %d", kept, n)
	}
	if got := p.Backends(); !slices.Equal(got, []string{other.addr}) {
		t.Errorf("Backends() = %v, want [%s]", got, other.addr)
	}
}

func TestStreamingResponse(t *testing.T) {
	p, url := startProxy(t, Options{})
	const chunks = 5
	next := make(chan struct{})
	b := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		for i := range chunks {
			fmt.Fprintf(w, "chunk %d\n", i)
			rc.Flush()
			if i == chunks-1 {
				return
			}
			// The next chunk is written only once the client has this one:
			// a buffering proxy would deadlock here until the timeout.
			select {
			case <-next:
			case <-r.Context().Done():
				return
			}
		}
	})
	p.Add(b.addr)

	c := &http.Client{Timeout: 5 * time.Second}
	res, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	br := bufio.NewReader(res.Body)
	for i := range chunks {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
		if want := fmt.Sprintf("chunk %d\n", i); line != want {
			t.Fatalf("got %q, want %q", line, want)
		}
		if i < chunks-1 {
			next <- struct{}{}
		}
	}
}

func TestLargeUploadStreamed(t *testing.T) {
	p, url := startProxy(t, Options{})
	const size, head = 100 << 20, 1 << 20
	gotHead := make(chan struct{})
	b := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		n, err := io.CopyN(io.Discard, r.Body, head)
		if err != nil {
			return
		}
		close(gotHead)
		m, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, n+m)
	})
	p.Add(b.addr)

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	pr, pw := io.Pipe()
	go func() {
		buf := make([]byte, 64<<10)
		for sent := 0; sent < size; sent += len(buf) {
			if sent == head {
				// The app must see the start of the body before the client
				// has sent the rest of it.
				select {
				case <-gotHead:
				case <-time.After(5 * time.Second):
					pw.CloseWithError(errors.New("backend saw nothing of the body before it was all sent"))
					return
				}
			}
			if _, err := pw.Write(buf); err != nil {
				return
			}
		}
		pw.Close()
	}()
	req, _ := http.NewRequest(http.MethodPost, url, pr)
	req.ContentLength = size
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if want := fmt.Sprint(size); string(got) != want {
		t.Fatalf("backend received %q bytes, want %s", got, want)
	}

	runtime.ReadMemStats(&after)
	// Client, proxy and backend share this process, so this bounds all
	// three: a copy of the body anywhere would pass 100 MiB.
	alloc := after.TotalAlloc - before.TotalAlloc
	if alloc > 16<<20 {
		t.Errorf("allocated %d MiB while forwarding a 100 MiB body", alloc>>20)
	}
	t.Logf("allocated %d KiB while forwarding a 100 MiB body", alloc>>10)
}

// dialUpgrade opens a raw connection to the proxy and switches it to
// WebSocket by hand.
func dialUpgrade(t *testing.T, url string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprint(c, "GET /ws HTTP/1.1\r\nHost: app.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d, want 101", res.StatusCode)
	}
	return c, br
}

// echoUpgrade switches to WebSocket and echoes what it reads, as a
// WebSocket app would on its own framing.
func echoUpgrade(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Upgrade") != "websocket" {
		http.Error(w, "want an upgrade", http.StatusBadRequest)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	brw.Flush()
	io.Copy(conn, brw.Reader)
}

func roundTrip(t *testing.T, c net.Conn, br *bufio.Reader, msg string) {
	t.Helper()
	fmt.Fprintln(c, msg)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := br.ReadString('\n')
	if err != nil || line != msg+"\n" {
		t.Fatalf("echo of %q: %q, %v", msg, line, err)
	}
}

func TestUpgradedConnectionDrained(t *testing.T) {
	const drain = time.Second
	p, url := startProxy(t, Options{UpgradedDrain: drain})
	b := startBackend(t, echoUpgrade)
	p.Add(b.addr)
	c, br := dialUpgrade(t, url)
	roundTrip(t, c, br, "ping")
	if n := p.InFlight(b.addr); n != 1 {
		t.Errorf("InFlight = %d with one WebSocket open, want 1", n)
	}

	start := time.Now()
	removed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		removed <- p.Remove(ctx, b.addr)
	}()
	testenv.WaitFor(t, "the backend to leave rotation", 5*time.Second, func() bool { return len(p.Backends()) == 0 })
	roundTrip(t, c, br, "still there") // within UpgradedDrain

	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := br.ReadString('\n'); !errors.Is(err, io.EOF) {
		t.Errorf("read after UpgradedDrain: %v, want EOF", err)
	}
	if err := <-removed; err != nil {
		t.Errorf("Remove: %v", err)
	}
	if d := time.Since(start); d < drain {
		t.Errorf("Remove returned after %v, before UpgradedDrain %v", d, drain)
	}
}

func TestEventStreamDrained(t *testing.T) {
	const drain = 200 * time.Millisecond
	p, url := startProxy(t, Options{UpgradedDrain: drain})
	b := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: hello\n\n")
		http.NewResponseController(w).Flush()
		<-r.Context().Done() // an endless stream
	})
	p.Add(b.addr)
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	br := bufio.NewReader(res.Body)
	if line, err := br.ReadString('\n'); err != nil || line != "data: hello\n" {
		t.Fatalf("first event: %q, %v", line, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Remove(ctx, b.addr); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := io.ReadAll(br); err == nil {
		t.Error("the event stream ended cleanly; want it cut off")
	}
}

func TestClientGoneCancelsUpstream(t *testing.T) {
	p, url := startProxy(t, Options{})
	started, cancelled := make(chan struct{}), make(chan struct{})
	b := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done()
		close(cancelled)
	})
	p.Add(b.addr)

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	errc := make(chan error, 1)
	go func() {
		res, err := http.DefaultClient.Do(req)
		if err == nil {
			res.Body.Close()
		}
		errc <- err
	}()
	<-started
	cancel()
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the backend's request was not cancelled when the client went away")
	}
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("client: %v, want context.Canceled", err)
	}
	testenv.WaitFor(t, "the request to end", 5*time.Second, func() bool { return p.InFlight(b.addr) == 0 })
}

// TestRemoveThenQuiet: quiet runs once the ordinary requests are done and
// only an upgraded connection is left, and the drain ends as soon as that
// connection does, long before UpgradedDrain.
func TestRemoveThenQuiet(t *testing.T) {
	p, url := startProxy(t, Options{UpgradedDrain: time.Minute})
	release := make(chan struct{})
	b := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
			io.WriteString(w, "slow")
			return
		}
		echoUpgrade(w, r)
	})
	p.Add(b.addr)
	c, br := dialUpgrade(t, url)
	roundTrip(t, c, br, "ping")
	slow := make(chan error, 1)
	go func() {
		res, err := http.Get(url + "/slow")
		if err == nil {
			res.Body.Close()
		}
		slow <- err
	}()
	testenv.WaitFor(t, "the slow request to reach the backend", 5*time.Second, func() bool { return p.InFlight(b.addr) == 2 })

	var quiets atomic.Int32
	quiet := make(chan struct{})
	removed := make(chan error, 1)
	start := time.Now()
	go func() {
		removed <- p.RemoveThen(context.Background(), b.addr, func() {
			if quiets.Add(1) == 1 {
				close(quiet)
			}
		})
	}()
	testenv.WaitFor(t, "the backend to leave rotation", 5*time.Second, func() bool { return len(p.Backends()) == 0 })
	select {
	case <-quiet:
		t.Fatal("quiet ran while an ordinary request was in flight")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if err := <-slow; err != nil {
		t.Fatalf("slow request: %v", err)
	}
	select {
	case <-quiet:
	case <-time.After(5 * time.Second):
		t.Fatal("quiet did not run once only the upgraded connection was left")
	}
	roundTrip(t, c, br, "still carried") // quiet is no cut
	c.Close()                            // what the app, asked to stop, makes its client do
	if err := <-removed; err != nil {
		t.Fatalf("RemoveThen: %v", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("RemoveThen took %v: it waited for UpgradedDrain instead of the connection", d)
	}
	if n := quiets.Load(); n != 1 {
		t.Errorf("quiet ran %d times, want 1", n)
	}
}
