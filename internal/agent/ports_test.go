package agent

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/ferrydeploy/ferry/graceful"
	"github.com/ferrydeploy/ferry/internal/agent/listenfd"
	"github.com/ferrydeploy/ferry/internal/agent/procinfo"
	"github.com/ferrydeploy/ferry/internal/agent/proxyd"
	"github.com/ferrydeploy/ferry/internal/agent/runas"
	"github.com/ferrydeploy/ferry/internal/agent/supervise"
	"github.com/ferrydeploy/ferry/internal/artifact"
)

// The test binary plays every program the agent starts: its proxy process
// (`__proxy`), the handoff shim (`__listen-exec`), the app (`test-app`,
// which bin/serve in the test artifacts runs) and a stranger holding a port
// (`test-hold`).
const (
	argApp  = "test-app"
	argHold = "test-hold"
	envBin  = "AGENT_TEST_BIN"
)

func TestMain(m *testing.M) {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case proxyd.Command:
			root := ""
			for i := 2; i+1 < len(os.Args); i++ {
				if os.Args[i] == "--root" {
					root = os.Args[i+1]
				}
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
			defer stop()
			if err := proxyd.Main(ctx, root, nil); err != nil {
				fmt.Fprintln(os.Stderr, "proxy:", err)
				os.Exit(1)
			}
			os.Exit(0)
		case listenfd.ShimCommand:
			fmt.Fprintln(os.Stderr, "shim:", listenfd.Exec(os.Args[3:]))
			os.Exit(127)
		case runas.ShimCommand:
			// processes with user: or limits: start through it
			fmt.Fprintln(os.Stderr, runas.Exec(os.Args[2:]))
			os.Exit(127)
		case argApp:
			testApp()
			os.Exit(0)
		case argHold:
			holdPort(os.Args[2])
			os.Exit(0)
		}
	}
	self, err := os.Executable()
	if err != nil {
		panic(err)
	}
	os.Setenv(envBin, self)
	os.Exit(m.Run())
}

// testApp serves GET / with its release (body and X-Release) through the
// graceful package, on the socket handed to it or on $PORT. APP_EXTRA_PORT
// makes it listen on a second, fixed port first, and APP_BOLT open a bolt
// file (which takes an exclusive lock, waiting for it): what an app that
// cannot run twice at once does.
func testApp() {
	release := os.Getenv("FERRY_RELEASE")
	if p := os.Getenv("APP_EXTRA_PORT"); p != "" {
		l, err := net.Listen("tcp", "127.0.0.1:"+p)
		if err != nil {
			fmt.Fprintln(os.Stderr, "extra port:", err)
			os.Exit(1)
		}
		defer l.Close()
	}
	if path := os.Getenv("APP_BOLT"); path != "" {
		db, err := bolt.Open(path, 0o600, nil)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bolt:", err)
			os.Exit(1)
		}
		defer db.Close()
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Release", release)
		io.WriteString(w, release)
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	l, err := graceful.Listen(":8080")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	srv := &graceful.Server{HTTP: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, LameDuck: 200 * time.Millisecond}
	if err := srv.Serve(context.Background(), l); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// holdPort listens on port with SO_REUSEPORT, as another agent or a
// graceful app run by hand does, answers "stranger", says "ready" and runs
// until stdin closes.
func holdPort(port string) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, 0xf /* SO_REUSEPORT */, 1) })
	}}
	l, err := lc.Listen(context.Background(), "tcp", ":"+port)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	go http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Release", "stranger")
		io.WriteString(w, "stranger")
	}))
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
}

// portApp packs an app named web-app whose processes (ferry.yaml text) run
// bin/serve, the test binary as testApp.
func portApp(t *testing.T, version, processes string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	yaml := fmt.Sprintf("app: webapp\nbuild:\n  command: \"true\"\ninclude: [bin/]\n%s", processes)
	os.WriteFile(filepath.Join(dir, "ferry.yaml"), []byte(yaml), 0o644)
	os.MkdirAll(filepath.Join(dir, "bin"), 0o755)
	os.WriteFile(filepath.Join(dir, "bin", "serve"), []byte("#!/bin/sh\nexec \"$"+envBin+"\" "+argApp+" \"$@\"\n"), 0o755)
	res, err := artifact.Build(context.Background(), dir, artifact.BuildOptions{Version: version, OutDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return res.Path, res.SHA256
}

// webProc is ferry.yaml's processes with one web process.
func webProc(port int, mode string, scale int) string {
	return fmt.Sprintf(`processes:
  web:
    command: bin/serve
    port: %d
    upgrade: %s
    scale: %d
    stop_timeout: 3s
    health: {http: /healthz, interval: 50ms}
`, port, mode, scale)
}

// startPortAgent is startAgent with the test binary as the ferry binary,
// and makes sure no proxy process outlives the test: it would hold the
// test's output open.
func startPortAgent(t *testing.T, root, desiredPath string, mod ...func(*Config)) *testAgent {
	t.Helper()
	t.Cleanup(func() { killProxyProcess(t, root) })
	return startAgent(t, root, desiredPath, append([]func(*Config){func(c *Config) {
		c.Self = os.Getenv(envBin)
		c.HealthTimeout = 10 * time.Second
	}}, mod...)...)
}

func killProxyProcess(t *testing.T, root string) {
	in, err := proxyd.NewClient(proxyd.Options{Root: root}).Info(context.Background())
	if err != nil {
		return
	}
	syscall.Kill(in.PID, syscall.SIGKILL)
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(in.PID, 0) == nil && time.Now().Before(deadline) {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", in.PID)); err == nil && strings.Contains(string(b), ") Z ") {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	p, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// load sends GETs to a port, on keep-alive connections and on a new
// connection each, every request bounded by a timeout (a connection left
// in an accept queue nobody takes from hangs, and counts as failed), until
// stopped; it counts failures and who answered.
type load struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       []string
	releases   map[string]int
	stop       chan struct{}
	wg         sync.WaitGroup
}

func startLoad(port int) *load {
	l := &load{stop: make(chan struct{}), releases: map[string]int{}}
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	for _, c := range []*http.Client{
		{Timeout: 3 * time.Second},
		{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}},
	} {
		for range 2 {
			l.wg.Go(func() {
				for {
					select {
					case <-l.stop:
						return
					default:
					}
					res, err := c.Get(url)
					rel := ""
					if err == nil {
						io.Copy(io.Discard, res.Body)
						res.Body.Close()
						rel = res.Header.Get("X-Release")
						if res.StatusCode != http.StatusOK {
							err = fmt.Errorf("status %s", res.Status)
						}
					}
					l.mu.Lock()
					if err != nil {
						l.failed.Add(1)
						if len(l.errs) < 5 {
							l.errs = append(l.errs, err.Error())
						}
					} else {
						l.ok.Add(1)
						l.releases[rel]++
					}
					l.mu.Unlock()
				}
			})
		}
	}
	return l
}

// end stops the load and fails the test on any failed request.
func (l *load) end(t *testing.T, what string) map[string]int {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	t.Logf("%s: %d requests ok, %d failed, answered by %v", what, l.ok.Load(), l.failed.Load(), l.releases)
	if l.ok.Load() == 0 {
		t.Errorf("%s: no request succeeded", what)
	}
	if n := l.failed.Load(); n > 0 {
		t.Errorf("%s: %d requests failed, e.g. %s", what, n, strings.Join(l.errs, "; "))
	}
	return l.releases
}

// answers returns who answers GET / on port, or the error.
func answers(port int) (string, error) {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	res, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %s: %s", res.Status, b)
	}
	return string(b), nil
}

// listeners counts the listening sockets on port (all of them, whoever
// holds them): an agent owns a port with exactly one.
func listeners(t *testing.T, port int) int {
	t.Helper()
	n := 0
	for _, name := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(name)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(strings.NewReader(string(b)))
		sc.Scan()
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) > 3 && f[3] == "0A" && strings.HasSuffix(f[1], fmt.Sprintf(":%04X", port)) {
				n++
			}
		}
	}
	return n
}

// TestAgentRestartServesThroughout stops the agent the way SIGTERM does
// and starts it again, under load, in proxy and in handoff mode, then
// upgrades through the restarted agent: no request may fail or hang, the
// restarted agent adopts the instances with their real ports, and the
// port has one listening socket throughout, not an orphan beside it.
func TestAgentRestartServesThroughout(t *testing.T) {
	for _, mode := range []string{"proxy", "handoff"} {
		t.Run(mode, func(t *testing.T) {
			port := freeTCPPort(t)
			a1, s1 := portApp(t, "v1", webProc(port, mode, 2))
			a2, s2 := portApp(t, "v2", webProc(port, mode, 2))
			root, desiredPath := t.TempDir(), filepath.Join(t.TempDir(), "desired.yaml")
			writeDesired(t, desiredPath, "apps:\n"+entry("webapp", a1, s1, ""))
			ta := startPortAgent(t, root, desiredPath)
			st := ta.until("v1 running", 30*time.Second, running("webapp", s1, 2))
			before := pids(st.Apps["webapp"])

			l := startLoad(port)
			time.Sleep(300 * time.Millisecond)
			for i := range 2 {
				ta.stop()
				time.Sleep(300 * time.Millisecond) // no agent at all, for a while
				if n := listeners(t, port); n != 1 {
					t.Errorf("with the agent stopped, port %d has %d listening sockets, want 1", port, n)
				}
				ta = startPortAgent(t, root, desiredPath)
				st = ta.until(fmt.Sprintf("adopted after restart %d", i+1), 30*time.Second, running("webapp", s1, 2))
				if got := pids(st.Apps["webapp"]); fmt.Sprint(got) != fmt.Sprint(before) {
					t.Fatalf("after restart %d the instances are %v, want the same %v", i+1, got, before)
				}
				if n := listeners(t, port); n != 1 {
					t.Errorf("after restart %d, port %d has %d listening sockets, want 1", i+1, port, n)
				}
			}
			writeDesired(t, desiredPath, "apps:\n"+entry("webapp", a2, s2, ""))
			ta.until("v2 running", 30*time.Second, running("webapp", s2, 2))
			time.Sleep(300 * time.Millisecond)
			got := l.end(t, mode)
			if len(got) != 2 {
				t.Errorf("answered by %v, want both releases", got)
			}
			if n := listeners(t, port); n != 1 {
				t.Errorf("port %d has %d listening sockets after the upgrade, want 1", port, n)
			}
		})
	}
}

// TestModeChangesDeployCleanly deploys a release after release that
// changes the web process's upgrade mode, port, scale, and adds, removes
// and renames a process: each one runs and answers. Changes between proxy
// and handoff, of scale and of the process beside or behind the port lose
// no request.
func TestModeChangesDeployCleanly(t *testing.T) {
	port, port2, apiPort := freeTCPPort(t), freeTCPPort(t), freeTCPPort(t)
	api := fmt.Sprintf(`  api:
    command: bin/serve
    port: %d
    upgrade: proxy
    health: {http: /healthz, interval: 50ms}
`, apiPort)
	steps := []struct {
		name      string
		procs     string
		port      int // where web answers
		instances int
		seamless  bool // no request to port may fail
		closed    []int
	}{
		{"proxy", webProc(port, "proxy", 1), port, 1, false, nil},
		{"proxy to stop-start", webProc(port, "stop-start", 1), port, 1, false, nil},
		{"stop-start to handoff", webProc(port, "handoff", 1), port, 1, false, nil},
		{"handoff to proxy", webProc(port, "proxy", 1), port, 1, true, nil},
		{"proxy to handoff", webProc(port, "handoff", 1), port, 1, true, nil},
		{"handoff scale 2", webProc(port, "handoff", 2), port, 2, true, nil},
		{"handoff to proxy, scale 2", webProc(port, "proxy", 2), port, 2, true, nil},
		{"scale 1", webProc(port, "proxy", 1), port, 1, true, nil},
		{"process added", webProc(port, "proxy", 1) + api, port, 2, true, nil},
		{"process removed", webProc(port, "proxy", 1), port, 1, true, []int{apiPort}},
		{"process renamed", strings.Replace(webProc(port, "proxy", 1), "  web:", "  www:", 1), port, 1, true, nil},
		{"renamed back, to handoff", webProc(port, "handoff", 1), port, 1, true, nil},
		{"to proxy", webProc(port, "proxy", 1), port, 1, true, nil},
		{"port changed", webProc(port2, "proxy", 1), port2, 1, false, []int{port}},
		{"handoff to stop-start", webProc(port2, "handoff", 1) + "", port2, 1, false, nil},
		{"stop-start again", webProc(port2, "stop-start", 1), port2, 1, false, nil},
	}
	root, desiredPath := t.TempDir(), filepath.Join(t.TempDir(), "desired.yaml")
	var ta *testAgent
	for i, s := range steps {
		art, sum := portApp(t, fmt.Sprintf("v%d", i+1), s.procs)
		var l *load
		if s.seamless {
			l = startLoad(s.port)
		}
		writeDesired(t, desiredPath, "apps:\n"+entry("webapp", art, sum, ""))
		if ta == nil {
			ta = startPortAgent(t, root, desiredPath)
		}
		st := ta.until(s.name, 30*time.Second, running("webapp", sum, s.instances))
		rel := st.Apps["webapp"].Release
		deadline := time.Now().Add(10 * time.Second)
		for {
			got, err := answers(s.port)
			if err == nil && got == rel {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: port %d answers %q (%v), want %s", s.name, s.port, got, err, rel)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if l != nil {
			time.Sleep(200 * time.Millisecond)
			l.end(t, s.name)
		}
		if s.name == "process added" {
			if got, err := answers(apiPort); err != nil || got != rel {
				t.Errorf("%s: api on port %d answers %q (%v), want %s", s.name, apiPort, got, err, rel)
			}
		}
		for _, p := range s.closed {
			waitClosed(t, s.name, p)
		}
	}
}

// waitClosed waits until nothing listens on port any more.
func waitClosed(t *testing.T, what string, port int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for listeners(t, port) > 0 {
		if time.Now().After(deadline) {
			t.Errorf("%s: port %d is still open 10s later", what, port)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startHolder runs a stranger listening on port with SO_REUSEPORT.
func startHolder(t *testing.T, port int) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Getenv(envBin), argHold, fmt.Sprint(port))
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		in.Close()
		cmd.Wait()
	})
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "ready\n" {
		t.Fatalf("holder: %q", line)
	}
	return cmd
}

// TestPortHeldByStrangerRefused: a port another process holds, even with
// SO_REUSEPORT (so that the agent's bind used to succeed and the kernel
// split the connections between the two), fails the deploy before
// anything stops, naming the port and the holder.
func TestPortHeldByStrangerRefused(t *testing.T) {
	port, taken := freeTCPPort(t), freeTCPPort(t)
	stranger := startHolder(t, taken)
	a1, s1 := portApp(t, "v1", webProc(port, "proxy", 1))
	a2, s2 := portApp(t, "v2", webProc(taken, "proxy", 1))
	root, desiredPath := t.TempDir(), filepath.Join(t.TempDir(), "desired.yaml")
	writeDesired(t, desiredPath, "apps:\n"+entry("webapp", a1, s1, ""))
	ta := startPortAgent(t, root, desiredPath)
	st := ta.until("v1 running", 30*time.Second, running("webapp", s1, 1))
	before := pids(st.Apps["webapp"])

	writeDesired(t, desiredPath, "apps:\n"+entry("webapp", a2, s2, ""))
	st = ta.until("v2 refused", 30*time.Second, func(st *State) bool {
		as := st.Apps["webapp"]
		return as != nil && as.State == AppFailed && as.Rejected != nil && as.Rejected.SHA256 == s2
	})
	msg := st.Apps["webapp"].Error
	t.Logf("the agent says: %s", msg)
	for _, want := range []string{
		fmt.Sprintf("port %d is in use by pid %d (", taken, stranger.Process.Pid),
		argHold, "nothing was stopped",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("the error does not say %q: %s", want, msg)
		}
	}
	if got := pids(st.Apps["webapp"]); fmt.Sprint(got) != fmt.Sprint(before) {
		t.Errorf("v1's instances went from %v to %v: something stopped", before, got)
	}
	if got, err := answers(port); err != nil || !strings.HasPrefix(got, "v1-") {
		t.Errorf("v1 on port %d answers %q (%v)", port, got, err)
	}
	for range 20 {
		if got, err := answers(taken); err != nil || got != "stranger" {
			t.Fatalf("port %d answered %q (%v): only the stranger may answer on its port", taken, got, err)
		}
	}
}

// TestExclusiveHoldSaysStopStart: an app that holds an exclusive lock (a
// bolt file) or a second fixed port cannot run a second instance beside
// the first, as proxy and handoff upgrades do. The release fails safe, and
// the error names what the old instance holds and `upgrade: stop-start`,
// with which the same app upgrades.
func TestExclusiveHoldSaysStopStart(t *testing.T) {
	for _, tt := range []struct {
		name, env, want string
	}{
		{"bolt lock", "APP_BOLT: %s", "an exclusive lock on %s"},
		{"second port", "APP_EXTRA_PORT: '%d'", "holds port %d"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			port := freeTCPPort(t)
			var env, want string
			if tt.name == "bolt lock" {
				db := filepath.Join(t.TempDir(), "app.db")
				env, want = fmt.Sprintf(tt.env, db), fmt.Sprintf(tt.want, db)
			} else {
				extra := freeTCPPort(t)
				env, want = fmt.Sprintf(tt.env, extra), fmt.Sprintf(tt.want, extra)
			}
			extra := "    env: {" + env + "}\n"
			a1, s1 := portApp(t, "v1", webProc(port, "proxy", 1))
			a2, s2 := portApp(t, "v2", webProc(port, "proxy", 1)+"deploy: {health_timeout: 2s}\n")
			a3, s3 := portApp(t, "v3", webProc(port, "stop-start", 1))
			root, desiredPath := t.TempDir(), filepath.Join(t.TempDir(), "desired.yaml")
			writeDesired(t, desiredPath, "apps:\n"+entry("webapp", a1, s1, extra))
			ta := startPortAgent(t, root, desiredPath)
			ta.until("v1 running", 30*time.Second, running("webapp", s1, 1))

			writeDesired(t, desiredPath, "apps:\n"+entry("webapp", a2, s2, extra))
			st := ta.until("v2 fails", 30*time.Second, func(st *State) bool {
				as := st.Apps["webapp"]
				return as != nil && as.State == AppFailed && as.Rejected != nil && as.Rejected.SHA256 == s2
			})
			msg := st.Apps["webapp"].Error
			t.Logf("the agent says: %s", msg)
			for _, w := range []string{want, "upgrade: stop-start"} {
				if !strings.Contains(msg, w) {
					t.Errorf("the error does not say %q: %s", w, msg)
				}
			}
			if got, err := answers(port); err != nil || !strings.HasPrefix(got, "v1-") {
				t.Errorf("after the failed release port %d answers %q (%v), want v1", port, got, err)
			}
			writeDesired(t, desiredPath, "apps:\n"+entry("webapp", a3, s3, extra))
			ta.until("v3 (stop-start) running", 30*time.Second, running("webapp", s3, 1))
		})
	}
}

// TestRestartStopsUnadoptedInstance: an agent killed while it replaced
// web.1 recorded two instances of web.1, the new one and then the old;
// the next agent adopts the old one and must stop the other, which nobody
// would stop otherwise (in handoff mode it would go on taking connections).
func TestRestartStopsUnadoptedInstance(t *testing.T) {
	port := freeTCPPort(t)
	a1, s1 := portApp(t, "v1", webProc(port, "proxy", 1))
	root, desiredPath := t.TempDir(), filepath.Join(t.TempDir(), "desired.yaml")
	writeDesired(t, desiredPath, "apps:\n"+entry("webapp", a1, s1, ""))
	ta := startPortAgent(t, root, desiredPath)
	st := ta.until("v1 running", 30*time.Second, running("webapp", s1, 1))
	real, realPort := pids(st.Apps["webapp"]), st.Apps["webapp"].Processes[0].Port
	ta.stop()

	stray := exec.Command("sleep", "1000")
	stray.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := stray.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { stray.Wait(); close(exited) }()
	t.Cleanup(func() { stray.Process.Kill(); <-exited })
	saved, err := ReadState(root)
	if err != nil {
		t.Fatal(err)
	}
	as := saved.Apps["webapp"]
	dup := as.Processes[0]
	dup.PID = stray.Process.Pid
	ps, err := procinfo.ReadStat(dup.PID)
	if err != nil {
		t.Fatal(err)
	}
	dup.StartTicks, dup.Port = ps.StartTicks, freeTCPPort(t)
	as.Processes = append([]supervise.Status{dup}, as.Processes...)
	if err := writeState(root, saved); err != nil {
		t.Fatal(err)
	}

	ta = startPortAgent(t, root, desiredPath)
	st = ta.until("adopted", 30*time.Second, running("webapp", s1, 1))
	if got := pids(st.Apps["webapp"]); fmt.Sprint(got) != fmt.Sprint(real) {
		t.Errorf("adopted %v, want %v", got, real)
	}
	if got := st.Apps["webapp"].Processes[0].Port; got != realPort {
		t.Errorf("the adopted instance is recorded on port %d; it listens on %d", got, realPort)
	}
	if got, err := answers(port); err != nil || !strings.HasPrefix(got, "v1-") {
		t.Errorf("port %d answers %q (%v)", port, got, err)
	}
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		t.Fatalf("the unadopted instance (pid %d) still runs 15s after the agent started", stray.Process.Pid)
	}
}

// TestHandoffSocketTakenBack: the agent and then its proxy process are
// both killed; the handoff instances still hold the port's socket and go
// on serving. The next agent cannot bind the port beside them, and takes
// the very socket back from them instead (pidfd_getfd), so that it can
// still upgrade them: no request fails, and the port keeps one socket.
func TestHandoffSocketTakenBack(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("taking a socket from a process the agent did not start needs root where ptrace is restricted")
	}
	port := freeTCPPort(t)
	a1, s1 := portApp(t, "v1", webProc(port, "handoff", 2))
	a2, s2 := portApp(t, "v2", webProc(port, "handoff", 2))
	root, desiredPath := t.TempDir(), filepath.Join(t.TempDir(), "desired.yaml")
	writeDesired(t, desiredPath, "apps:\n"+entry("webapp", a1, s1, ""))
	ta := startPortAgent(t, root, desiredPath)
	st := ta.until("v1 running", 30*time.Second, running("webapp", s1, 2))
	before := pids(st.Apps["webapp"])
	l := startLoad(port)
	time.Sleep(200 * time.Millisecond)
	ta.stop()
	killProxyProcess(t, root)
	time.Sleep(200 * time.Millisecond)
	if n := listeners(t, port); n != 1 {
		t.Errorf("with neither agent nor proxy process, port %d has %d listening sockets, want 1 (the instances')", port, n)
	}
	ta = startPortAgent(t, root, desiredPath)
	st = ta.until("adopted", 30*time.Second, running("webapp", s1, 2))
	if got := pids(st.Apps["webapp"]); fmt.Sprint(got) != fmt.Sprint(before) {
		t.Errorf("adopted %v, want %v", got, before)
	}
	writeDesired(t, desiredPath, "apps:\n"+entry("webapp", a2, s2, ""))
	ta.until("v2 running", 30*time.Second, running("webapp", s2, 2))
	time.Sleep(200 * time.Millisecond)
	if got := l.end(t, "handoff"); len(got) != 2 {
		t.Errorf("answered by %v, want both releases", got)
	}
	if n := listeners(t, port); n != 1 {
		t.Errorf("port %d has %d listening sockets after the upgrade, want 1", port, n)
	}
}
