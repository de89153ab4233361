//go:build unix

package graceful

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The tests run real processes: the test binary re-executes itself as a
// small app served through graceful when this variable is set.
const envChild = "GRACEFUL_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(envChild) == "1" {
		os.Exit(runChild())
	}
	os.Exit(m.Run())
}

// runChild is the app under test. GRACEFUL_TEST_ADDR is the address it asks
// for, GRACEFUL_TEST_LAME_DUCK its lame duck. It answers / with its pid,
// /slow?ms=N after N ms (logging "slow start" first, so a test can tell the
// request is in flight), and /fds with what it inherited.
func runChild() int {
	lameDuck, _ := time.ParseDuration(os.Getenv("GRACEFUL_TEST_LAME_DUCK"))
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%d\n", os.Getpid())
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		fmt.Fprintln(os.Stderr, "slow start")
		time.Sleep(time.Duration(ms) * time.Millisecond)
		fmt.Fprintf(w, "slept %d\n", ms)
	})
	mux.HandleFunc("/fds", func(w http.ResponseWriter, r *http.Request) {
		for _, k := range []string{envListenPID, envListenFDs, envListenFDNames} {
			fmt.Fprintf(w, "%s=%q\n", k, os.Getenv(k))
		}
		// Descriptor 3 is the first passed socket: when the app did not
		// take it, it must still be open but close-on-exec.
		flags, _, errno := syscall.Syscall(syscall.SYS_FCNTL, 3, syscall.F_GETFD, 0)
		fmt.Fprintf(w, "fd3 cloexec=%v errno=%d\n", errno == 0 && flags&syscall.FD_CLOEXEC != 0, errno)
	})
	srv := &Server{
		HTTP:     &http.Server{Addr: os.Getenv("GRACEFUL_TEST_ADDR"), Handler: mux},
		LameDuck: lameDuck,
	}
	if err := srv.ListenAndServe(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	return 0
}

// child is a running copy of the test app.
type child struct {
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
	err  error // valid once done is closed
}

// startChild runs the test app with env added to ours; args, when given,
// replace the command (to start it through a wrapper).
func startChild(t *testing.T, env []string, args ...string) *child {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if len(args) == 0 {
		args = []string{exe}
	}
	c := &child{out: &lockedBuffer{}, done: make(chan struct{})}
	c.cmd = exec.Command(args[0], args[1:]...)
	c.cmd.Env = append(os.Environ(), envChild+"=1")
	c.cmd.Env = append(c.cmd.Env, env...)
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.err = c.cmd.Wait(); close(c.done) }()
	t.Cleanup(func() {
		c.cmd.Process.Kill()
		<-c.done
	})
	return c
}

func (c *child) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := c.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// exit waits up to within for the child to end and returns its exit code.
func (c *child) exit(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(within):
		t.Fatalf("child still running after %v\n%s", within, c.out)
	}
	var ee *exec.ExitError
	if errors.As(c.err, &ee) {
		return ee.ExitCode()
	}
	if c.err != nil {
		t.Fatal(c.err)
	}
	return 0
}

// waitOutput polls the child's output for s.
func (c *child) waitOutput(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(c.out.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("child did not print %q within 10s\n%s", s, c.out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// notifySocket listens on a unixgram socket as a supervisor would and returns
// its name for $NOTIFY_SOCKET and the messages it receives. A name starting
// with '@' is in the abstract namespace; "" picks a path in a temp dir.
func notifySocket(t *testing.T, name string) (string, <-chan string) {
	t.Helper()
	if name == "" {
		name = t.TempDir() + "/notify"
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	msgs := make(chan string, 16)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	return name, msgs
}

// waitMsg waits for the next notification and checks it is want.
func waitMsg(t *testing.T, msgs <-chan string, want string, c *child) {
	t.Helper()
	select {
	case got := <-msgs:
		if got != want {
			t.Fatalf("notification %q, want %q", got, want)
		}
	case <-time.After(10 * time.Second):
		out := ""
		if c != nil {
			out = c.out.String()
		}
		t.Fatalf("no %q within 10s\n%s", want, out)
	}
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// get fetches url on a fresh connection and returns the body.
func get(t *testing.T, url string) string {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %s", url, resp.Status, b.String())
	}
	return b.String()
}
