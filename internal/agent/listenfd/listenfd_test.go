package listenfd_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry/internal/agent/listenfd"
	"github.com/ferrydeploy/ferry/internal/testenv"
)

// serveEnv makes the test binary a stand-in app: it takes its listeners with
// Listeners, answers every connection with one line "PID NAME LISTEN_PID",
// prints "serving", and at EOF on stdin stops accepting, finishes what it
// accepted and exits.
const serveEnv = "LISTENFD_TEST_SERVE"

func TestMain(m *testing.M) {
	// The test binary is its own shim, as the ferry binary is in production.
	if len(os.Args) > 2 && os.Args[1] == listenfd.ShimCommand && os.Args[2] == "--" {
		err := listenfd.Exec(os.Args[3:])
		fmt.Fprintln(os.Stderr, "shim:", err)
		os.Exit(127)
	}
	if os.Getenv(serveEnv) == "1" {
		if err := serve(); err != nil {
			fmt.Fprintln(os.Stderr, "serve:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func serve() error {
	listenPID := os.Getenv("LISTEN_PID")
	if listenPID != strconv.Itoa(os.Getpid()) {
		return fmt.Errorf("LISTEN_PID=%q, my pid is %d", listenPID, os.Getpid())
	}
	listeners, names, err := listenfd.Listeners()
	if err != nil {
		return err
	}
	if len(listeners) == 0 {
		return errors.New("no listeners")
	}
	for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		if s, ok := os.LookupEnv(v); ok {
			return fmt.Errorf("%s=%s left for my children", v, s)
		}
	}

	var accepting, handling sync.WaitGroup
	for i, ln := range listeners {
		accepting.Go(func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return // closed at EOF on stdin
				}
				handling.Go(func() {
					defer c.Close()
					fmt.Fprintf(c, "%d %s %s\n", os.Getpid(), names[i], listenPID)
				})
			}
		})
	}
	fmt.Println("serving")
	io.Copy(io.Discard, os.Stdin)
	for _, ln := range listeners {
		ln.Close()
	}
	accepting.Wait()
	handling.Wait()
	return nil
}

// app is a running stand-in app.
type app struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
}

// stop has the app drain and exit, and waits for it.
func (a *app) stop(t *testing.T) {
	t.Helper()
	a.stdin.Close()
	if err := a.cmd.Wait(); err != nil {
		t.Errorf("app %d: %v", a.cmd.Process.Pid, err)
	}
}

// launch starts cmd as a stand-in app; the app is stopped at the end of the
// test if the test has not.
func launch(t *testing.T, cmd *exec.Cmd) *app {
	t.Helper()
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a := &app{cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout)}
	t.Cleanup(func() {
		if a.cmd.ProcessState == nil {
			a.stdin.Close()
			a.cmd.Wait()
		}
	})
	return a
}

// waitServing returns once the app has taken its listeners.
func (a *app) waitServing(t *testing.T) {
	t.Helper()
	if line, err := a.out.ReadString('\n'); line != "serving\n" {
		t.Fatalf("app said %q, %v", line, err)
	}
}

// start runs cmd as a stand-in app and returns once it serves.
func start(t *testing.T, cmd *exec.Cmd) *app {
	t.Helper()
	a := launch(t, cmd)
	a.waitServing(t)
	return a
}

// childEnv is what every stand-in app gets besides what is under test.
func childEnv() []string {
	// The race detector otherwise waits a second at exit, in every child.
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	return []string{serveEnv + "=1", "GORACE=" + gorace}
}

// startShimmed starts the test binary in serve mode through the shim, as
// the agent starts an app.
func startShimmed(t *testing.T, listeners []net.Listener, names []string) *app {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	argv, env, files, err := listenfd.Command(self, []string{self}, listeners, names)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(append(os.Environ(), childEnv()...), env...)
	cmd.ExtraFiles = files
	a := start(t, cmd)
	for _, f := range files {
		f.Close()
	}
	return a
}

type answer struct {
	pid       int
	name      string
	listenPID string
}

// ask connects to addr and reads the app's one-line answer.
func ask(addr string) (answer, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return answer{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return answer{}, fmt.Errorf("read: %w", err)
	}
	var a answer
	if _, err := fmt.Sscanf(line, "%d %s %s\n", &a.pid, &a.name, &a.listenPID); err != nil {
		return answer{}, fmt.Errorf("answer %q: %w", line, err)
	}
	return a, nil
}

func listenTCP(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func TestCommandPassesNamedListeners(t *testing.T) {
	web, admin := listenTCP(t), listenTCP(t)
	a := startShimmed(t, []net.Listener{web, admin}, []string{"web", "admin"})
	pid := a.cmd.Process.Pid

	for _, tc := range []struct {
		ln   net.Listener
		name string
	}{{web, "web"}, {admin, "admin"}} {
		got, err := ask(tc.ln.Addr().String())
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		// The app runs with the pid the agent got from starting the shim.
		want := answer{pid: pid, name: tc.name, listenPID: strconv.Itoa(pid)}
		if got != want {
			t.Errorf("%s answered %+v, want %+v", tc.name, got, want)
		}
	}
	a.stop(t)
}

// The point of handing a socket over: while the agent keeps it open, apps
// come and go on it and not one connection is refused or reset.
func TestHandoffLosesNoConnection(t *testing.T) {
	ln := listenTCP(t)
	addr := ln.Addr().String()
	old := startShimmed(t, []net.Listener{ln}, []string{"web"})

	type result struct {
		answer
		err error
	}
	var (
		mu      sync.Mutex
		results []result
		done    = make(chan struct{})
		dialers sync.WaitGroup
	)
	for range 4 {
		dialers.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				a, err := ask(addr)
				mu.Lock()
				results = append(results, result{a, err})
				mu.Unlock()
			}
		})
	}
	// answeredBy waits until some connection made from now on is answered
	// by pid, so each swap happens under load.
	answeredBy := func(pid int) {
		t.Helper()
		mu.Lock()
		from := len(results)
		mu.Unlock()
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			rs := results[from:]
			mu.Unlock()
			for _, r := range rs {
				if r.pid == pid {
					return
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatalf("no answer from %d in 10s", pid)
	}

	pids := []int{old.cmd.Process.Pid}
	answeredBy(pids[0])
	for range 3 {
		next := startShimmed(t, []net.Listener{ln}, []string{"web"})
		pids = append(pids, next.cmd.Process.Pid)
		answeredBy(next.cmd.Process.Pid)
		old.stop(t)
		answeredBy(next.cmd.Process.Pid)
		old = next
	}
	close(done)
	dialers.Wait()
	old.stop(t)

	byPID := map[int]int{}
	failed := 0
	for _, r := range results {
		if r.err != nil {
			failed++
			if failed <= 5 {
				t.Errorf("connection failed: %v", r.err)
			}
			continue
		}
		byPID[r.pid]++
	}
	t.Logf("%d connections over %d swaps, answered per pid %v", len(results), len(pids)-1, byPID)
	if failed > 0 {
		t.Fatalf("%d of %d connections failed", failed, len(results))
	}
	for _, pid := range pids {
		if byPID[pid] == 0 {
			t.Errorf("pid %d answered nothing", pid)
		}
	}
}

// Listeners must take sockets from systemd's own tool as from the shim.
func TestSystemdSocketActivate(t *testing.T) {
	tool := testenv.NeedCommand(t, "systemd-socket-activate")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The tool does not say which port it bound, so take a free one; another
	// process taking it in between is possible, and would fail the test.
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := probe.Addr().String()
	probe.Close()

	// The tool passes on only the environment it is told to.
	args := []string{"-l", addr, "--fdname=web"}
	for _, kv := range childEnv() {
		args = append(args, "-E", kv)
	}
	a := launch(t, exec.Command(tool, append(args, self)...))

	// The tool execs the app at the first connection, which then waits in
	// the queue for it; until it has bound, connections are refused.
	var got answer
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err = ask(addr)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	a.waitServing(t)
	// The tool too execs the app, which so has the tool's pid.
	pid := a.cmd.Process.Pid
	if want := (answer{pid: pid, name: "web", listenPID: strconv.Itoa(pid)}); got != want {
		t.Errorf("answered %+v, want %+v", got, want)
	}
	a.stop(t)
}

type notAFile struct{ net.Listener }

func TestCommandRefuses(t *testing.T) {
	ln := listenTCP(t)
	for _, tc := range []struct {
		name      string
		argv      []string
		listeners []net.Listener
		names     []string
	}{
		{"no program", nil, []net.Listener{ln}, nil},
		{"too few names", []string{"app"}, []net.Listener{ln, ln}, []string{"web"}},
		{"colon in name", []string{"app"}, []net.Listener{ln}, []string{"a:b"}},
		{"empty name", []string{"app"}, []net.Listener{ln}, []string{""}},
		{"space in name", []string{"app"}, []net.Listener{ln}, []string{"a b"}},
		{"long name", []string{"app"}, []net.Listener{ln}, []string{strings.Repeat("x", 256)}},
		{"listener without a file", []string{"app"}, []net.Listener{ln, notAFile{ln}}, []string{"a", "b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, files, err := listenfd.Command("/bin/ferry", tc.argv, tc.listeners, tc.names); err == nil {
				t.Errorf("Command succeeded with %d files", len(files))
			}
		})
	}
}

func TestCommandShape(t *testing.T) {
	ln := listenTCP(t)
	argv, env, files, err := listenfd.Command("/bin/ferry", []string{"bin/app", "-v"}, []net.Listener{ln, ln}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		f.Close()
	}
	if want := "/bin/ferry " + listenfd.ShimCommand + " -- bin/app -v"; strings.Join(argv, " ") != want {
		t.Errorf("argv %q, want %q", argv, want)
	}
	if want := "LISTEN_FDS=2 LISTEN_FDNAMES=unknown:unknown"; strings.Join(env, " ") != want {
		t.Errorf("env %q, want %q", env, want)
	}
	if len(files) != 2 {
		t.Errorf("%d files, want 2", len(files))
	}
}

func TestListenersForAnotherProcess(t *testing.T) {
	t.Setenv("LISTEN_PID", strconv.Itoa(os.Getppid()))
	t.Setenv("LISTEN_FDS", "1")
	t.Setenv("LISTEN_FDNAMES", "web")
	listeners, names, err := listenfd.Listeners()
	if listeners != nil || names != nil || err != nil {
		t.Errorf("Listeners() = %v, %v, %v; want nothing", listeners, names, err)
	}
	if _, ok := os.LookupEnv("LISTEN_FDS"); ok {
		t.Error("LISTEN_FDS left set")
	}
}

func TestListenersMalformed(t *testing.T) {
	for _, tc := range []struct{ fds, names string }{{"x", "web"}, {"-1", ""}, {"1", "web:admin"}, {"2", "web"}} {
		t.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
		t.Setenv("LISTEN_FDS", tc.fds)
		t.Setenv("LISTEN_FDNAMES", tc.names)
		if _, _, err := listenfd.Listeners(); err == nil {
			t.Errorf("LISTEN_FDS=%q LISTEN_FDNAMES=%q: no error", tc.fds, tc.names)
		}
	}
}

func TestExecRefuses(t *testing.T) {
	t.Setenv("LISTEN_FDS", "")
	if err := listenfd.Exec(nil); err == nil {
		t.Error("Exec(nil) returned no error")
	}
	if err := listenfd.Exec([]string{"/nonexistent/program"}); err == nil {
		t.Error("Exec of a missing program returned no error")
	}
}
