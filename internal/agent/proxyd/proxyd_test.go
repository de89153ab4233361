package proxyd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestMain makes the test binary its own proxy process, as the ferry
// binary is in production: `TESTBIN __proxy --root ROOT`.
func TestMain(m *testing.M) {
	if len(os.Args) > 2 && os.Args[1] == Command {
		root := ""
		for i := 2; i+1 < len(os.Args); i++ {
			if os.Args[i] == "--root" {
				root = os.Args[i+1]
			}
		}
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		defer stop()
		log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("part", "proxy")
		if err := Main(ctx, root, log); err != nil {
			fmt.Fprintln(os.Stderr, "proxy:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func newClient(t *testing.T, root string) *Client {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c := NewClient(Options{Root: root, Self: self, Logger: slog.New(slog.NewTextHandler(os.Stderr, nil)).With("part", "client")})
	t.Cleanup(c.Close)
	return c
}

// killProxy ends the proxy process of root, if one runs, and waits for it:
// it holds the test's output open.
func killProxy(t *testing.T, root string) {
	c := NewClient(Options{Root: root})
	in, err := c.Info(context.Background())
	if err != nil {
		return
	}
	syscall.Kill(in.PID, syscall.SIGKILL)
	waitGone(t, in.PID)
}

func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && strings.Contains(string(b), ") Z ") {
			return // exited; its parent (this test) has yet to reap it
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d still runs after 10s", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// app is a backend on loopback answering with its name.
func app(t *testing.T, name string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) })}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

// load sends GETs to port on keep-alive and on new connections, each
// bounded by a timeout, until stopped, counting failures.
type load struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       []string
	stop       chan struct{}
	wg         sync.WaitGroup
}

func startLoad(port int) *load {
	l := &load{stop: make(chan struct{})}
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	clients := []*http.Client{
		{Timeout: 2 * time.Second},
		{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}},
	}
	for _, c := range clients {
		for range 2 {
			l.wg.Go(func() {
				for {
					select {
					case <-l.stop:
						return
					default:
					}
					res, err := c.Get(url)
					if err == nil {
						io.Copy(io.Discard, res.Body)
						res.Body.Close()
						if res.StatusCode != http.StatusOK {
							err = fmt.Errorf("status %s", res.Status)
						}
					}
					if err != nil {
						l.failed.Add(1)
						l.mu.Lock()
						if len(l.errs) < 5 {
							l.errs = append(l.errs, err.Error())
						}
						l.mu.Unlock()
						continue
					}
					l.ok.Add(1)
				}
			})
		}
	}
	return l
}

func (l *load) end(t *testing.T) {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	if l.ok.Load() == 0 {
		t.Errorf("no request succeeded")
	}
	if n := l.failed.Load(); n > 0 {
		t.Errorf("%d of %d requests failed, e.g. %s", n, n+l.ok.Load(), strings.Join(l.errs, "; "))
	}
}

// serveApp opens port for owner and proxies it to a new backend.
func serveApp(t *testing.T, c *Client, num int) *Port {
	t.Helper()
	ctx := context.Background()
	p, err := c.Open(ctx, num, "hello/web", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Add(ctx, app(t, "v1")); err != nil {
		t.Fatal(err)
	}
	if err := p.Serve(ctx, true, 0); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPortsOutliveTheAgent: the agent's client goes away (the agent is
// stopped or killed) and a new one comes; the port is served throughout,
// and the new client gets the same socket back, not a second one.
func TestPortsOutliveTheAgent(t *testing.T) {
	root := t.TempDir()
	t.Cleanup(func() { killProxy(t, root) })
	num := freePort(t)
	c1 := newClient(t, root)
	if _, err := c1.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	p1 := serveApp(t, c1, num)
	ino := socketInode(t, p1.Listener())
	l := startLoad(num)
	time.Sleep(200 * time.Millisecond)
	c1.Close() // what an agent's exit does: the process and its ports stay
	time.Sleep(300 * time.Millisecond)

	c2 := newClient(t, root)
	in, err := c2.Connect(context.Background())
	if err != nil || in == nil {
		t.Fatalf("Connect: %v, %+v", err, in)
	}
	if len(in.Ports) != 1 || in.Ports[0].Port != num || !in.Ports[0].Serving || len(in.Ports[0].Backends) != 1 {
		t.Errorf("the proxy process holds %+v, want port %d served with one backend", in.Ports, num)
	}
	p2, err := c2.Open(context.Background(), num, "hello/web", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := socketInode(t, p2.Listener()); got != ino {
		t.Errorf("the second client got socket %d, the first had %d: one port, one socket", got, ino)
	}
	if _, err := c2.Open(context.Background(), num, "other/web", nil); !errors.As(err, new(*OwnedError)) {
		t.Errorf("opening the port for another owner: %v, want an OwnedError", err)
	}
	// Another backend, the old one out, while the load goes on.
	ctx := context.Background()
	if err := p2.Sync(ctx, []string{app(t, "v2")}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	l.end(t)

	// Closed, the port is free again, and the process, holding nothing,
	// exits.
	if err := p2.Close(ctx, time.Second); err != nil {
		t.Fatal(err)
	}
	if ln, err := net.Listen("tcp", fmt.Sprintf(":%d", num)); err != nil {
		t.Errorf("port %d after Close: %v", num, err)
	} else {
		ln.Close()
	}
	waitGone(t, in.PID)
}

// TestPortInUseNamesHolder: a port another process listens on, even with
// SO_REUSEPORT (which the agent used to set, so that both bound and the
// kernel split the connections), is refused, naming the process.
func TestPortInUseNamesHolder(t *testing.T) {
	root := t.TempDir()
	t.Cleanup(func() { killProxy(t, root) })
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, 0xf /* SO_REUSEPORT */, 1) })
	}}
	other, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	num := other.Addr().(*net.TCPAddr).Port
	c := newClient(t, root)
	_, err = c.Open(context.Background(), num, "hello/web", nil)
	var inUse *InUseError
	if !errors.As(err, &inUse) {
		t.Fatalf("Open of a port another process holds: %v, want an InUseError", err)
	}
	if want := fmt.Sprintf("port %d is in use by pid %d (", num, os.Getpid()); !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not name the holder: want %q…", err, want)
	}
}

// TestProxyProcessRevived: the proxy process is killed; the agent's client
// starts another and hands it the port (the agent's own duplicate: the
// socket never closed) with its backends.
func TestProxyProcessRevived(t *testing.T) {
	root := t.TempDir()
	t.Cleanup(func() { killProxy(t, root) })
	num := freePort(t)
	c := newClient(t, root)
	if _, err := c.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	serveApp(t, c, num)
	in, err := c.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	syscall.Kill(in.PID, syscall.SIGKILL)
	waitGone(t, in.PID)
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", num))
		if err == nil {
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode == http.StatusOK && string(b) == "v1" {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("port %d not served again 10s after the proxy process was killed: %v", num, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	in2, err := c.Info(context.Background())
	if err != nil || in2.PID == in.PID {
		t.Fatalf("after the kill: %+v, %v", in2, err)
	}
}

// TestProxyProcessUpgrade: a proxy process hands its ports to a new one
// under load without a failed request.
func TestProxyProcessUpgrade(t *testing.T) {
	root := t.TempDir()
	t.Cleanup(func() { killProxy(t, root) })
	num := freePort(t)
	c := newClient(t, root)
	if _, err := c.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	serveApp(t, c, num)
	l := startLoad(num)
	var pids []int
	for range 3 {
		time.Sleep(300 * time.Millisecond)
		in, err := c.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, in.PID)
		if err := c.Upgrade(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	l.end(t)
	in, err := c.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if pid == in.PID {
			t.Errorf("pid %d still serves after an upgrade: %v → %d", pid, pids, in.PID)
		}
	}
	if len(in.Ports) != 1 || !in.Ports[0].Serving || len(in.Ports[0].Backends) != 1 {
		t.Errorf("after the upgrades the process holds %+v", in.Ports)
	}
}

func socketInode(t *testing.T, ln net.Listener) uint64 {
	t.Helper()
	f, err := fileOf(ln)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}
