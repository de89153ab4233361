package proxyd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ferrydeploy/ferry/internal/agent/procinfo"
)

// startTimeout bounds the start of a proxy process.
const startTimeout = 30 * time.Second

// Options say how the agent runs its proxy process.
type Options struct {
	Root string
	// Self is the ferry binary the process runs (`Self __proxy`).
	Self     string
	LogLevel string // the process's --log-level
	Logger   *slog.Logger
}

// Client is the agent's side of its proxy process. It remembers every
// port it handed the process, with the agent's own duplicate of the
// socket, its backends and whether it is proxied, so that when the process
// dies it starts a new one and hands it all again: the sockets themselves
// never close, since the agent holds them too.
type Client struct {
	opt  Options
	path string
	log  *slog.Logger

	mu      sync.Mutex // serialises starting (and restoring) the process
	ports   map[int]*Port
	started chan struct{} // closed and replaced whenever a process starts
	stop    chan struct{}
	closed  bool
}

// NewClient returns a client; nothing starts until a port is opened.
func NewClient(opt Options) *Client {
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	return &Client{
		opt:     opt,
		path:    filepath.Join(opt.Root, SocketFile),
		log:     opt.Logger,
		ports:   map[int]*Port{},
		started: make(chan struct{}),
		stop:    make(chan struct{}),
	}
}

// Connect finds the proxy process an earlier agent left running, if any;
// one that runs another binary than this agent is upgraded to this one
// (without a moment where its ports are not served). Then the client
// watches the process, to start a new one should it die. It returns what
// the process holds; nil when none runs.
func (c *Client) Connect(ctx context.Context) (*Info, error) {
	defer func() { go c.watch() }()
	in, err := c.Info(ctx)
	if errors.Is(err, errNotRunning) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if pid, err := c.peerPID(ctx); err == nil && pid != in.PID {
		return nil, fmt.Errorf("proxy: %s answers for pid %d but its peer is pid %d", c.path, in.PID, pid)
	}
	if ticks, err := startTicks(in.PID); err != nil || ticks != in.StartTicks {
		return nil, fmt.Errorf("proxy: pid %d on %s is not the process it says it is", in.PID, c.path)
	}
	if in.Exe != SelfExe() && c.opt.Self != "" {
		c.log.Info("upgrading the proxy process to this agent's binary", "pid", in.PID)
		if err := c.Upgrade(ctx); err != nil {
			// The old one keeps serving; that is no reason not to run.
			c.log.Warn("proxy process upgrade failed; keeping the running one", keyErr, err)
		} else if in, err = c.Info(ctx); err != nil {
			return nil, err
		}
	}
	c.log.Info("adopted the proxy process", keyPID, in.PID, "ports", len(in.Ports))
	return in, nil
}

// Upgrade has the running process hand its ports to a new one that runs
// Self, and returns once that one serves them.
func (c *Client) Upgrade(ctx context.Context) error {
	_, _, err := c.call(ctx, request{Op: opUpgrade, Self: c.opt.Self}, -1, nil, false)
	return err
}

// Info asks the running process about itself.
func (c *Client) Info(ctx context.Context) (*Info, error) {
	rep, _, err := c.call(ctx, request{Op: opInfo}, -1, nil, false)
	if err != nil {
		return nil, err
	}
	if rep.Info == nil {
		return nil, errors.New("proxy: info: empty answer")
	}
	return rep.Info, nil
}

// peerPID is the pid at the other end of the control socket, as the
// kernel says (SO_PEERCRED).
func (c *Client) peerPID(ctx context.Context) (int, error) {
	conn, err := c.dial(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	sc, err := conn.SyscallConn()
	if err != nil {
		return 0, err
	}
	var pid int
	var serr error
	sc.Control(func(fd uintptr) {
		cred, err := syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
		if err != nil {
			serr = err
			return
		}
		pid = int(cred.Pid)
	})
	return pid, serr
}

// Close stops watching and lets go of the agent's duplicates of the
// sockets; the process and its ports stay.
func (c *Client) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	close(c.stop)
	for _, p := range c.ports {
		p.ln.Close()
	}
	clear(c.ports)
}

// errNotRunning is a dial that found no proxy process.
var errNotRunning = errors.New("no proxy process runs")

func (c *Client) dial(ctx context.Context) (*net.UnixConn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unixpacket", c.path)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("%w (%s)", errNotRunning, c.path)
		}
		return nil, fmt.Errorf("proxy: %w", err)
	}
	return conn.(*net.UnixConn), nil
}

// call sends req (with fd when >= 0) and returns the final reply and the
// socket that came with it. Events go to event. With revive, a process that
// is not running (or is on its way out) is started, and given back every
// port this client handed the one before, first.
func (c *Client) call(ctx context.Context, req request, fd int, event func(string), revive bool) (reply, *os.File, error) {
	for attempt := 0; ; attempt++ {
		rep, f, err := c.callOnce(ctx, req, fd, event)
		gone := errors.Is(err, errNotRunning) || (err == nil && rep.Exiting)
		if !gone || !revive || attempt == 3 {
			if err == nil && rep.Exiting {
				err = errors.New("proxy: the proxy process is exiting")
			}
			if err == nil && rep.Error != "" {
				err = errors.New(rep.Error)
			}
			return rep, f, err
		}
		if err := c.ensure(ctx); err != nil {
			return reply{}, nil, err
		}
	}
}

func (c *Client) callOnce(ctx context.Context, req request, fd int, event func(string)) (reply, *os.File, error) {
	conn, err := c.dial(ctx)
	if err != nil {
		return reply{}, nil, err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	if err := send(conn, req, fd); err != nil {
		return reply{}, nil, fmt.Errorf("proxy: %s: %w", req.Op, err)
	}
	for {
		var rep reply
		f, err := receive(conn, &rep)
		if err != nil {
			if ctx.Err() != nil {
				return reply{}, nil, ctx.Err()
			}
			// The process died with the request (or is exiting and
			// closed the socket): to the caller, it is not running.
			if errors.Is(err, errEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) {
				return reply{}, nil, fmt.Errorf("%w: %s got no answer", errNotRunning, req.Op)
			}
			return reply{}, nil, fmt.Errorf("proxy: %s: %w", req.Op, err)
		}
		if rep.Event != "" {
			if event != nil {
				event(rep.Event)
			}
			continue
		}
		return rep, f, nil
	}
}

// ensure starts a proxy process unless one answers, and hands it every
// port this client holds.
func (c *Client) ensure(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("proxy: the agent is stopping")
	}
	if rep, _, err := c.callOnce(ctx, request{Op: opInfo}, -1, nil); err == nil && !rep.Exiting {
		return nil
	}
	if err := c.start(ctx); err != nil {
		return err
	}
	for _, p := range c.ports {
		if err := p.restore(ctx); err != nil {
			return fmt.Errorf("proxy: restoring port %d: %w", p.Num, err)
		}
	}
	if len(c.ports) > 0 {
		c.log.Warn("started a new proxy process and handed it the ports again", "ports", len(c.ports))
	}
	return nil
}

// start starts a proxy process and waits until it answers. The caller
// holds c.mu.
func (c *Client) start(ctx context.Context) error {
	if c.opt.Self == "" {
		return errors.New("proxy: owning a public port needs the path of the ferry binary, which this agent does not know")
	}
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	defer r.Close()
	args := []string{Command, "--root", c.opt.Root}
	if c.opt.LogLevel != "" {
		args = append(args, "--log-level", c.opt.LogLevel)
	}
	cmd := exec.Command(c.opt.Self, args...)
	// Its own session: no signal meant for the agent's process group (a
	// terminal's Ctrl-C, a supervisor's kill of the group) reaches it.
	// Its log goes where the agent's does.
	cmd.Dir, cmd.Stderr = c.opt.Root, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.ExtraFiles = []*os.File{w}
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d", envReadyFD, 3))
	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("proxy: start %s: %w", c.opt.Self, err)
	}
	w.Close()
	go cmd.Wait() // reaped here should it exit while the agent runs
	got := make(chan error, 1)
	go func() {
		b, err := io.ReadAll(r)
		if err == nil && string(b) != "ready\n" {
			err = errors.New("it exited before it served")
		}
		got <- err
	}()
	select {
	case err = <-got:
	case <-time.After(startTimeout):
		err = fmt.Errorf("it did not answer within %v", startTimeout)
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		cmd.Process.Kill()
		return fmt.Errorf("proxy: the proxy process (pid %d): %w", cmd.Process.Pid, err)
	}
	c.log.Info("started the proxy process", keyPID, cmd.Process.Pid)
	close(c.started)
	c.started = make(chan struct{})
	return nil
}

// watch keeps a connection to the process open: when it drops, the process
// has exited (or handed over to a successor), and a client that holds
// ports makes sure one runs.
func (c *Client) watch() {
	for {
		c.mu.Lock()
		started, closed := c.started, c.closed
		c.mu.Unlock()
		if closed {
			return
		}
		conn, err := c.dial(context.Background())
		if err != nil {
			select {
			case <-started:
			case <-c.stop:
				return
			}
			continue
		}
		gone := make(chan struct{})
		go func() {
			if send(conn, request{Op: opWatch}, -1) == nil {
				var rep reply
				receive(conn, &rep)
			}
			close(gone)
		}()
		select {
		case <-gone:
		case <-c.stop:
			conn.Close()
			<-gone
			return
		}
		conn.Close()
		c.mu.Lock()
		held := len(c.ports) > 0
		c.mu.Unlock()
		if held {
			ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
			if err := c.ensure(ctx); err != nil {
				c.log.Error("the proxy process is gone and no new one could start", keyErr, err)
				select {
				case <-time.After(time.Second):
				case <-c.stop:
				}
			}
			cancel()
		}
	}
}

// InUseError is a port that another process listens on.
type InUseError struct {
	Port    int
	Holders []procinfo.Proc // empty when none could be seen
}

func (e *InUseError) Error() string {
	if len(e.Holders) == 0 {
		return fmt.Sprintf("port %d is in use by a process this agent cannot see (`ss -ltnp 'sport = :%d'` as root names it)", e.Port, e.Port)
	}
	var hs []string
	for _, h := range e.Holders {
		hs = append(hs, h.String())
	}
	return fmt.Sprintf("port %d is in use by %s", e.Port, strings.Join(hs, ", "))
}

// OwnedError is a port the agent already owns for another app or process.
type OwnedError struct {
	Port  int
	Owner string
}

func (e *OwnedError) Error() string {
	return fmt.Sprintf("port %d is already owned by %s", e.Port, e.Owner)
}

// Port is one public port: its socket, held by the proxy process and by
// the agent (Listener), and what the client told the process about it.
type Port struct {
	c     *Client
	Num   int
	Owner string
	ln    net.Listener

	mu       sync.Mutex
	serving  bool
	backends []string
}

// Open returns port num for owner ("app/process"): the socket the proxy
// process already holds, or else inherited when given (a socket an
// upgrading agent handed this one), or else a new socket bound on every
// address, exclusively: a port another process listens on fails with an
// *InUseError naming it, one this agent owns for someone else with an
// *OwnedError.
func (c *Client) Open(ctx context.Context, num int, owner string, inherited net.Listener) (*Port, error) {
	c.mu.Lock()
	p := c.ports[num]
	c.mu.Unlock()
	if p != nil {
		if p.Owner != owner {
			return nil, &OwnedError{Port: num, Owner: p.Owner}
		}
		if inherited != nil {
			inherited.Close()
		}
		return p, nil
	}
	rep, f, err := c.call(ctx, request{Op: opOpen, Port: num}, -1, nil, true)
	if err != nil {
		return nil, err
	}
	if rep.Held {
		if f == nil {
			return nil, fmt.Errorf("proxy: port %d: no socket came with the answer", num)
		}
		defer f.Close()
		if rep.Owner != owner {
			return nil, &OwnedError{Port: num, Owner: rep.Owner}
		}
		ln, err := net.FileListener(f)
		if err != nil {
			return nil, fmt.Errorf("proxy: port %d: %w", num, err)
		}
		if inherited != nil {
			inherited.Close()
		}
		p = &Port{c: c, Num: num, Owner: owner, ln: ln}
		if in, err := c.Info(ctx); err == nil {
			for _, pi := range in.Ports {
				if pi.Port == num {
					p.serving, p.backends = pi.Serving, pi.Backends
				}
			}
		}
		return c.keep(p), nil
	}
	ln := inherited
	if ln == nil {
		if ln, err = listenExclusive(ctx, num); err != nil {
			return nil, err
		}
	}
	p = &Port{c: c, Num: num, Owner: owner, ln: ln}
	if err := p.hold(ctx); err != nil {
		ln.Close()
		return nil, err
	}
	return c.keep(p), nil
}

func (c *Client) keep(p *Port) *Port {
	c.mu.Lock()
	defer c.mu.Unlock()
	if q := c.ports[p.Num]; q != nil { // opened twice at once
		p.ln.Close()
		return q
	}
	c.ports[p.Num] = p
	return p
}

// listenExclusive binds port on every address without SO_REUSEPORT, so
// that no other process can share it with the agent unnoticed: with
// SO_REUSEPORT both would bind and the kernel would split the connections.
func listenExclusive(ctx context.Context, num int) (net.Listener, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", fmt.Sprintf(":%d", num))
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, &InUseError{Port: num, Holders: procinfo.PortHolders(num)}
	}
	if err != nil {
		return nil, fmt.Errorf("port %d: %w", num, err)
	}
	return ln, nil
}

// hold hands the proxy process a duplicate of the socket.
func (p *Port) hold(ctx context.Context) error {
	f, err := fileOf(p.ln)
	if err != nil {
		return fmt.Errorf("port %d: %w", p.Num, err)
	}
	defer f.Close()
	_, _, err = p.c.call(ctx, request{Op: opHold, Port: p.Num, Owner: p.Owner}, int(f.Fd()), nil, true)
	return err
}

// restore hands a new proxy process the port again, as this client left
// it. The caller holds c.mu.
func (p *Port) restore(ctx context.Context) error {
	f, err := fileOf(p.ln)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, _, err := p.c.callOnce(ctx, request{Op: opHold, Port: p.Num, Owner: p.Owner}, int(f.Fd()), nil); err != nil {
		return err
	}
	p.mu.Lock()
	backends, serving := slices.Clone(p.backends), p.serving
	p.mu.Unlock()
	if len(backends) > 0 {
		if err := p.check(p.c.callOnce(ctx, request{Op: opSync, Port: p.Num, Backends: backends}, -1, nil)); err != nil {
			return err
		}
	}
	if serving {
		return p.check(p.c.callOnce(ctx, request{Op: opServe, Port: p.Num, On: true}, -1, nil))
	}
	return nil
}

func (p *Port) check(rep reply, _ *os.File, err error) error {
	if err == nil && rep.Error != "" {
		err = errors.New(rep.Error)
	}
	return err
}

// Listener is the agent's duplicate of the socket, for handoff instances.
// Nothing accepts on it.
func (p *Port) Listener() net.Listener { return p.ln }

// Serving reports whether the proxy process proxies the port.
func (p *Port) Serving() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.serving
}

// Has reports whether addr is in the port's rotation.
func (p *Port) Has(addr string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Contains(p.backends, addr)
}

// Add puts the backend at addr in rotation.
func (p *Port) Add(ctx context.Context, addr string) error {
	if _, _, err := p.c.call(ctx, request{Op: opAdd, Port: p.Num, Backend: addr}, -1, nil, true); err != nil {
		return err
	}
	p.mu.Lock()
	if !slices.Contains(p.backends, addr) {
		p.backends = append(p.backends, addr)
	}
	p.mu.Unlock()
	return nil
}

// Remove takes addr out of rotation and waits (up to bound) for its
// requests, calling quiet once only upgraded connections and event streams
// are left (see proxy.Proxy.RemoveThen).
func (p *Port) Remove(ctx context.Context, addr string, bound time.Duration, quiet func()) error {
	p.mu.Lock()
	p.backends = slices.DeleteFunc(p.backends, func(b string) bool { return b == addr })
	p.mu.Unlock()
	ev := func(string) {}
	if quiet != nil {
		var once sync.Once
		ev = func(e string) {
			if e == "quiet" {
				once.Do(quiet)
			}
		}
	}
	_, _, err := p.c.call(ctx, request{Op: opRemove, Port: p.Num, Backend: addr, TimeoutMS: bound.Milliseconds()}, -1, ev, false)
	return err
}

// Sync makes addrs the port's rotation; backends it drops drain.
func (p *Port) Sync(ctx context.Context, addrs []string) error {
	if _, _, err := p.c.call(ctx, request{Op: opSync, Port: p.Num, Backends: addrs}, -1, nil, true); err != nil {
		return err
	}
	p.mu.Lock()
	p.backends = slices.Clone(addrs)
	p.mu.Unlock()
	return nil
}

// Serve starts (on) or stops proxying the port. Stopping waits up to bound
// for the requests in flight, while whoever else accepts on the socket
// (handoff instances) takes the new connections.
func (p *Port) Serve(ctx context.Context, on bool, bound time.Duration) error {
	if _, _, err := p.c.call(ctx, request{Op: opServe, Port: p.Num, On: on, TimeoutMS: bound.Milliseconds()}, -1, nil, true); err != nil {
		return err
	}
	p.mu.Lock()
	p.serving = on
	if !on {
		p.backends = nil
	}
	p.mu.Unlock()
	return nil
}

// Close stops serving the port, waits up to bound for its requests and
// closes the socket, in the proxy process and here.
func (p *Port) Close(ctx context.Context, bound time.Duration) error {
	c := p.c
	c.mu.Lock()
	if c.ports[p.Num] == p {
		delete(c.ports, p.Num)
	}
	c.mu.Unlock()
	defer p.ln.Close()
	_, _, err := c.call(ctx, request{Op: opClose, Port: p.Num, TimeoutMS: bound.Milliseconds()}, -1, nil, false)
	if errors.Is(err, errNotRunning) {
		return nil // nothing holds it there
	}
	return err
}

// Retain closes, in the proxy process, every port but those this client
// has opened: what an earlier agent left for apps this one does not run.
func (c *Client) Retain(ctx context.Context) error {
	c.mu.Lock()
	var keep []int
	for n := range c.ports {
		keep = append(keep, n)
	}
	c.mu.Unlock()
	_, _, err := c.call(ctx, request{Op: opRetain, Ports: keep}, -1, nil, false)
	if errors.Is(err, errNotRunning) {
		return nil
	}
	return err
}
