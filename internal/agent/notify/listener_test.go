package notify_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry/internal/agent/notify"
	"golang.org/x/sys/unix"
)

// childEnv makes the test binary a stand-in app: it sends each line of its
// stdin (with \n written as a backslash and n) to $NOTIFY_SOCKET, answering
// "sent" after each, and exits at EOF.
const childEnv = "NOTIFY_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		if err := runChild(); err != nil {
			os.Stderr.WriteString("child: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func runChild() error {
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		payload := strings.ReplaceAll(in.Text(), `\n`, "\n")
		if err := sendDatagram(os.Getenv("NOTIFY_SOCKET"), payload); err != nil {
			return err
		}
		if _, err := os.Stdout.WriteString("sent\n"); err != nil {
			return err
		}
	}
	return in.Err()
}

func sendDatagram(path, payload string) error {
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(payload))
	return err
}

// child is a running stand-in app.
type child struct {
	t     *testing.T
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
}

func startChild(t *testing.T, l *notify.Listener) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	// The race detector otherwise waits a second at exit, in every child.
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	cmd.Env = append(os.Environ(), childEnv+"=1", "NOTIFY_SOCKET="+l.Path(), "GORACE="+gorace)
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
	t.Cleanup(func() {
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("child: %v", err)
		}
	})
	return &child{t: t, cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout)}
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// send has the child send payload and returns once it has.
func (c *child) send(payload string) {
	c.t.Helper()
	if _, err := io.WriteString(c.stdin, strings.ReplaceAll(payload, "\n", `\n`)+"\n"); err != nil {
		c.t.Fatal(err)
	}
	if line, err := c.out.ReadString('\n'); err != nil || line != "sent\n" {
		c.t.Fatalf("child answered %q, %v", line, err)
	}
}

func listen(t *testing.T) *notify.Listener {
	t.Helper()
	l, err := notify.Listen(filepath.Join(t.TempDir(), "notify.sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Error(err)
		}
	})
	return l
}

func receive(t *testing.T, ch <-chan Event) Event {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("channel closed")
		}
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no event in 10s")
	}
	panic("unreachable")
}

type Event = notify.Event

func TestEventCarriesSenderPID(t *testing.T) {
	l := listen(t)
	c := startChild(t, l)
	ch, cancel := l.Subscribe(c.pid())
	defer cancel()

	c.send("READY=1\nSTATUS=serving")
	ev := receive(t, ch)
	if ev.PID != c.pid() {
		t.Errorf("event pid %d, child is %d", ev.PID, c.pid())
	}
	if ev.Fields["READY"] != "1" || ev.Fields["STATUS"] != "serving" || ev.Raw != "READY=1\nSTATUS=serving" {
		t.Errorf("event %+v", ev)
	}
	ctx, stop := context.WithTimeout(context.Background(), 10*time.Second)
	defer stop()
	if err := l.WaitReady(ctx, c.pid()); err != nil {
		t.Errorf("WaitReady: %v", err)
	}
}

// The agent learns a child's pid only once fork returns, by which time the
// child may have said READY=1 already.
func TestReadyBeforeSubscribe(t *testing.T) {
	l := listen(t)
	c := startChild(t, l)
	c.send("READY=1")

	ctx, stop := context.WithTimeout(context.Background(), 10*time.Second)
	defer stop()
	if err := l.WaitReady(ctx, c.pid()); err != nil {
		t.Fatalf("WaitReady after the child sent READY=1: %v", err)
	}
	// And a second subscriber is told as well.
	ch, cancel := l.Subscribe(c.pid())
	defer cancel()
	if ev := receive(t, ch); !ev.Ready() {
		t.Errorf("replayed %+v", ev)
	}
}

func TestOtherSenderCannotClaimReadiness(t *testing.T) {
	l := listen(t)
	c := startChild(t, l)
	c.send("STATUS=starting")

	// The test process, another pid, claims the child is ready in every way
	// the payload allows. Its own subscription shows when that was handled.
	own, cancelOwn := l.Subscribe(os.Getpid())
	defer cancelOwn()
	if err := sendDatagram(l.Path(), "READY=1\nMAINPID="+strconv.Itoa(c.pid())); err != nil {
		t.Fatal(err)
	}
	if ev := receive(t, own); ev.PID != os.Getpid() || !ev.Ready() {
		t.Fatalf("own event %+v", ev)
	}

	ch, cancel := l.Subscribe(c.pid())
	defer cancel()
	if ev := receive(t, ch); ev.Fields["STATUS"] != "starting" {
		t.Errorf("child's event %+v", ev)
	}
	select {
	case ev := <-ch:
		t.Fatalf("child credited with %+v", ev)
	default:
	}
	ctx, stop := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer stop()
	if err := l.WaitReady(ctx, c.pid()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitReady = %v, want deadline exceeded", err)
	}

	// The child itself can.
	c.send("READY=1")
	ctx, stop = context.WithTimeout(context.Background(), 10*time.Second)
	defer stop()
	if err := l.WaitReady(ctx, c.pid()); err != nil {
		t.Errorf("WaitReady after the child's READY=1: %v", err)
	}
}

func TestWaitReadyHonoursContext(t *testing.T) {
	l := listen(t)
	c := startChild(t, l)

	ctx, cancel := context.WithCancelCause(context.Background())
	cause := errors.New("instance exited")
	errc := make(chan error, 1)
	go func() { errc <- l.WaitReady(ctx, c.pid()) }()
	c.send("STATUS=still starting")
	cancel(cause)
	if err := <-errc; !errors.Is(err, cause) {
		t.Errorf("WaitReady = %v, want %v", err, cause)
	}
}

func TestCloseEndsWaitsAndSubscriptions(t *testing.T) {
	l, err := notify.Listen(filepath.Join(t.TempDir(), "notify.sock"))
	if err != nil {
		t.Fatal(err)
	}
	ch, cancel := l.Subscribe(os.Getpid())
	errc := make(chan error, 1)
	go func() { errc <- l.WaitReady(context.Background(), os.Getpid()) }()

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Errorf("WaitReady = %v, want net.ErrClosed", err)
	}
	if _, ok := <-ch; ok {
		t.Error("subscription still open")
	}
	cancel() // after Close: must not panic on the closed channel
	if _, err := os.Lstat(l.Path()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket file left: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, ok := <-mustSubscribe(l); ok {
		t.Error("Subscribe after Close gave an open channel")
	}
}

func mustSubscribe(l *notify.Listener) <-chan Event {
	ch, _ := l.Subscribe(1)
	return ch
}

func TestCancelClosesChannel(t *testing.T) {
	l := listen(t)
	ch, cancel := l.Subscribe(os.Getpid())
	cancel()
	cancel()
	if _, ok := <-ch; ok {
		t.Error("channel open after cancel")
	}
}

func TestListenFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "notify.sock")

	first, err := notify.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != notify.DefaultMode {
		t.Errorf("mode %v, %v; want %v", fi.Mode(), err, notify.DefaultMode)
	}
	// A stale socket (say from a crashed agent) is replaced, and the old
	// Listener's Close leaves the new one's file alone.
	second, err := notify.Config{Mode: 0o600}.Listen(path)
	if err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("old Listener's Close removed the new socket: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode())
	}
	if err := second.Close(); err != nil {
		t.Fatal(err)
	}

	// Anything that is not a socket is not ours to remove.
	regular := filepath.Join(dir, "file")
	if err := os.WriteFile(regular, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if l, err := notify.Listen(regular); err == nil {
		l.Close()
		t.Fatal("Listen replaced a regular file")
	}
	if b, err := os.ReadFile(regular); err != nil || string(b) != "keep" {
		t.Errorf("regular file now %q, %v", b, err)
	}
}

func TestOversizedDatagramDropped(t *testing.T) {
	l := listen(t)
	ch, cancel := l.Subscribe(os.Getpid())
	defer cancel()
	// A cut datagram could read READY=1 where the app wrote READY=10….
	if err := sendDatagram(l.Path(), "READY=1"+strings.Repeat("0", 70<<10)); err != nil {
		t.Fatal(err)
	}
	if err := sendDatagram(l.Path(), "STATUS=after"); err != nil {
		t.Fatal(err)
	}
	if ev := receive(t, ch); ev.Raw != "STATUS=after" {
		t.Errorf("first event %.40q, want the small one", ev.Raw)
	}
}

// A sender may pass file descriptors (FDSTORE=1); the agent does not keep
// them, so it must close them rather than leak one per datagram.
func TestPassedFilesClosed(t *testing.T) {
	l := listen(t)
	ch, cancel := l.Subscribe(os.Getpid())
	defer cancel()

	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	to := &unix.SockaddrUnix{Name: l.Path()}
	if err := unix.Sendmsg(fd, []byte("FDSTORE=1"), unix.UnixRights(int(w.Fd())), to, 0); err != nil {
		t.Fatal(err)
	}
	w.Close()
	receive(t, ch)

	// EOF only once every copy of the write end is closed, the Listener's too.
	r.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := r.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("read = %d, %v; want EOF", n, err)
	}
}
