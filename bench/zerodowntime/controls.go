package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The reuseport control's server is this binary, re-executed with these
// variables set: hello (today) binds $PORT without SO_REUSEPORT, so two
// copies of it cannot share a port.
const (
	envServe   = "ZERODOWNTIME_SERVE_REUSEPORT" // host:port to bind with SO_REUSEPORT
	envRelease = "ZERODOWNTIME_RELEASE"         // X-Release it answers with
)

// soReusePort is SO_REUSEPORT on Linux, which package syscall lacks; the
// harness is Linux-only anyway (it reads /proc), and x/sys is only an
// indirect dependency of the module.
const soReusePort = 0xf

func listenTCP(addr string, reuseport bool) (net.Listener, error) {
	lc := net.ListenConfig{}
	if reuseport {
		lc.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, soReusePort, 1)
			})
			if err != nil {
				return err
			}
			return serr
		}
	}
	return lc.Listen(context.Background(), "tcp", addr)
}

// freePort is a loopback port nothing listens on right now.
func freePort() (int, error) {
	l, err := listenTCP("127.0.0.1:0", false)
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// serveReuseport is what a usual "zero downtime with SO_REUSEPORT" app
// does: bind with SO_REUSEPORT, serve hello's endpoints (h2c too), and on
// SIGTERM close the listener and Shutdown. It says "ready" on stdout once
// it listens.
func serveReuseport(addr, release string) {
	l, err := listenTCP(addr, true)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		time.Sleep(time.Duration(ms) * time.Millisecond)
		w.Header().Set("X-Release", release)
		fmt.Fprintf(w, "hello from %s after %dms\n", release, ms)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Release", release)
		if r.Method == http.MethodPost {
			n, _ := io.Copy(io.Discard, r.Body)
			fmt.Fprintf(w, "%d\n", n)
			return
		}
		fmt.Fprintf(w, "hello from %s\n", release)
	})
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: mux, Protocols: &p, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	fmt.Println("ready")
	if err := srv.Serve(l); err != nil && err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Serve returns as soon as Shutdown starts: wait for the requests in
	// flight, or exiting would cut them (a mistake this control must not
	// make, so that what it loses is SO_REUSEPORT's doing).
	<-done
}

// proc is a server process the harness started itself.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func (p *proc) stop(grace time.Duration) error {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
		p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("pid %d ignored SIGTERM for %v", p.cmd.Process.Pid, grace)
	}
}

// startProc starts cmd with its output in logPath, and waits until ready
// says it is.
func startProc(cmd *exec.Cmd, logPath string, ready func(stdout *bufio.Reader) error) (*proc, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd.Stderr = f
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, err
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	br := bufio.NewReader(out)
	rerr := ready(br)
	go func() {
		io.Copy(f, br) // keep draining: a full pipe would block the server
		cmd.Wait()
		f.Close()
		close(p.done)
	}()
	if rerr != nil {
		p.stop(time.Second)
		return nil, rerr
	}
	return p, nil
}

// readyLine waits for the re-executed server's "ready".
func readyLine(br *bufio.Reader) error {
	line, err := br.ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		return fmt.Errorf("server did not say ready: %q %v", line, err)
	}
	return nil
}

// healthy polls http://addr/healthz until it answers 200.
func healthy(addr string) func(*bufio.Reader) error {
	return func(*bufio.Reader) error {
		deadline := time.Now().Add(10 * time.Second)
		for {
			resp, err := http.Get("http://" + addr + "/healthz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					return nil
				}
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s not healthy within 10s: %v", addr, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// runReuseport is the negative control: two servers on one port with
// SO_REUSEPORT, the new one started (and listening) before the old one is
// sent SIGTERM. Connections in the old listener's accept queue are reset
// and keep-alive POSTs race the old server's close.
func (e *env) runReuseport(ctx context.Context, s *Subject, i int) *Run {
	r := &Run{}
	self, err := os.Executable()
	if err != nil {
		r.Errors = append(r.Errors, err.Error())
		return r
	}
	port, err := freePort()
	if err != nil {
		r.Errors = append(r.Errors, err.Error())
		return r
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	dir := filepath.Join(e.work, fmt.Sprintf("reuseport-%d", i))
	os.MkdirAll(dir, 0o755)
	start := func(v, _ string) (*proc, error) {
		cmd := exec.Command(self)
		cmd.Env = append(os.Environ(), envServe+"="+addr, envRelease+"="+v)
		return startProc(cmd, filepath.Join(dir, v+".log"), readyLine)
	}
	s.Note = "two copies of a plain net/http server (this binary, re-executed) with SO_REUSEPORT on one port; old one SIGTERMed (Shutdown) once the new one listens"
	return e.swaps(ctx, r, port, fmt.Sprintf("r%d", i), "swapped", false, start)
}

// startHello runs the hello binary on port as release v.
func (e *env) startHello(dir string, port int, v string) (*proc, error) {
	cmd := exec.Command(e.hello)
	cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(port), "FERRY_RELEASE="+v)
	return startProc(cmd, filepath.Join(dir, v+".log"), healthy("127.0.0.1:"+strconv.Itoa(port)))
}

// startBadHello starts hello made bad by the variable bad (HELLO_CRASH
// etc.), without waiting for it: whoever deploys it must find out.
func (e *env) startBadHello(dir string, port int, v, bad string) (*proc, error) {
	cmd := exec.Command(e.hello)
	cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(port), "FERRY_RELEASE="+v, bad+"=1")
	return startProc(cmd, filepath.Join(dir, v+".log"), func(*bufio.Reader) error { return nil })
}

// errRejected is what a control's start returns for a bad release its
// tool refused to switch to; the old one goes on serving.
var errRejected = errors.New("rejected")

// runDirect is the latency baseline: one hello, no proxy, no upgrades.
func (e *env) runDirect(ctx context.Context, s *Subject, i int) *Run {
	r := &Run{}
	s.Note = fmt.Sprintf("hello alone for %v: no proxy, no upgrades", e.cfg.DirectFor)
	dir := filepath.Join(e.work, "direct")
	os.MkdirAll(dir, 0o755)
	port, err := freePort()
	if err != nil {
		r.Errors = append(r.Errors, err.Error())
		return r
	}
	p, err := e.startHello(dir, port, "direct-v1")
	if err != nil {
		r.Errors = append(r.Errors, err.Error())
		return r
	}
	r.Expected = []string{"direct-v1"}
	l := startLoad(ctx, e.loadConfig(port))
	select {
	case <-ctx.Done():
	case <-time.After(e.cfg.DirectFor):
	}
	finish(r, l)
	if err := p.stop(15 * time.Second); err != nil {
		r.Errors = append(r.Errors, err.Error())
	}
	return r
}

// runKamal deploys the same hello binary behind kamal-proxy, as Kamal does:
// start the new copy on a new port, `kamal-proxy deploy` (returns once the
// new target is healthy and traffic moved), then stop the old copy.
func (e *env) runKamal(ctx context.Context, s *Subject, i int) *Run {
	r := &Run{}
	fail := func(format string, a ...any) *Run {
		r.Errors = append(r.Errors, fmt.Sprintf(format, a...))
		return r
	}
	dir := filepath.Join(e.work, fmt.Sprintf("kamal-%d", i))
	state := filepath.Join(dir, "state")
	os.MkdirAll(state, 0o700)
	// kamal-proxy keeps its socket in $XDG_RUNTIME_DIR and its state under $HOME.
	kenv := append(os.Environ(), "XDG_RUNTIME_DIR="+state, "HOME="+state)
	port, err := freePort()
	if err != nil {
		return fail("%v", err)
	}
	tlsPort, err := freePort()
	if err != nil {
		return fail("%v", err)
	}
	kp := exec.Command(e.cfg.Kamal, "run", "--http-port", strconv.Itoa(port), "--https-port", strconv.Itoa(tlsPort))
	kp.Env = kenv
	kproc, err := startProc(kp, filepath.Join(dir, "kamal-proxy.log"), func(*bufio.Reader) error {
		deadline := time.Now().Add(10 * time.Second)
		for {
			c := exec.Command(e.cfg.Kamal, "list")
			c.Env = kenv
			if c.Run() == nil {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("kamal-proxy did not answer `list` within 10s")
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	if err != nil {
		return fail("kamal-proxy run: %v", err)
	}
	defer kproc.stop(10 * time.Second)
	s.Note = "kamal-proxy v0.9.2 in front of two hello processes: start new on a new port, `kamal-proxy deploy --target`, SIGTERM old"
	deploy := func(target int) error {
		c := exec.CommandContext(ctx, e.cfg.Kamal, "deploy", "hello", "--target", "127.0.0.1:"+strconv.Itoa(target),
			"--health-check-path", "/healthz", "--health-check-interval", "100ms", "--deploy-timeout", e.cfg.HealthTimeout.String(), "--drain-timeout", "10s")
		c.Env = kenv
		if b, err := c.CombinedOutput(); err != nil {
			return fmt.Errorf("kamal-proxy deploy: %v: %s", err, b)
		}
		return nil
	}
	start := func(v, bad string) (*proc, error) {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		var h *proc
		if bad == "" {
			h, err = e.startHello(dir, p, v)
		} else {
			h, err = e.startBadHello(dir, p, v, bad)
		}
		if err != nil {
			return nil, err
		}
		if err := deploy(p); err != nil {
			h.stop(time.Second)
			if bad != "" {
				return nil, errRejected
			}
			return nil, err
		}
		return h, nil
	}
	return e.swaps(ctx, r, port, fmt.Sprintf("kamal%d", i), "deployed", e.cfg.Bad, start)
}

// swaps is the controls' upgrade loop: under load, it starts version
// prefix-v(k+1) with start and then stops the one before, Upgrades times.
// With bad, every 4th version is a bad release as in the agent runs
// (proxy's rotation): start must return errRejected when its tool refused
// to switch to it.
func (e *env) swaps(ctx context.Context, r *Run, port int, prefix, outcome string, bad bool, start func(v, bad string) (*proc, error)) *Run {
	v := prefix + "-v1"
	cur, err := start(v, "")
	if err != nil {
		r.Errors = append(r.Errors, err.Error())
		return r
	}
	curBad := ""
	r.Expected = append(r.Expected, v)
	l := startLoad(ctx, e.loadConfig(port))
	time.Sleep(time.Second)
	for k := 1; k <= e.cfg.Upgrades && ctx.Err() == nil; k++ {
		v := fmt.Sprintf("%s-v%d", prefix, k+1)
		b := badEnv(bad, "proxy", k)
		t0 := time.Now()
		next, err := start(v, b)
		if errors.Is(err, errRejected) {
			r.Upgrades = append(r.Upgrades, Upgrade{Version: v, Bad: b, Outcome: "rejected", Secs: time.Since(t0).Round(time.Millisecond).Seconds()})
			time.Sleep(spacing(e.rng, e.cfg.SpacingMin, e.cfg.SpacingMax))
			continue
		}
		if err != nil {
			r.Errors = append(r.Errors, err.Error())
			break
		}
		if err := cur.stop(15 * time.Second); err != nil && curBad != "HELLO_IGNORE_TERM" {
			r.Errors = append(r.Errors, err.Error())
		}
		cur, curBad = next, b
		r.Expected = append(r.Expected, v)
		r.Upgrades = append(r.Upgrades, Upgrade{Version: v, Bad: b, Outcome: outcome, Secs: time.Since(t0).Round(time.Millisecond).Seconds()})
		time.Sleep(spacing(e.rng, e.cfg.SpacingMin, e.cfg.SpacingMax))
	}
	time.Sleep(time.Second)
	finish(r, l)
	cur.stop(15 * time.Second)
	return r
}
