package proxyd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/ferrydeploy/ferry/internal/agent/listenfd"
	"github.com/ferrydeploy/ferry/internal/agent/procinfo"
	"github.com/ferrydeploy/ferry/internal/agent/proxy"
)

const (
	// idleExit is how long a proxy process that holds no port waits for
	// one before it exits: long enough for an agent that just started it
	// to bind and hand over its first socket.
	idleExit = 3 * time.Second
	// lameDuck is how long a port that another process goes on accepting
	// on (a handoff instance, a successor proxy process) keeps telling
	// its keep-alive clients to reconnect before its idle connections are
	// closed.
	lameDuck = time.Second
	// drainBound bounds the requests in flight when a port closes or the
	// process exits, unless the request says otherwise.
	drainBound = 30 * time.Second
	// handoverTimeout bounds the start of a successor proxy process.
	handoverTimeout = 30 * time.Second
)

// Log keys.
const (
	keyPort  = "port"
	keyOwner = "owner"
	keyErr   = "err"
	keyPID   = "pid"
)

// server is the proxy process.
type server struct {
	root string
	path string // the control socket
	log  *slog.Logger
	args []string // this process's arguments after the binary, for a successor
	ctl  *net.UnixListener

	mu       sync.Mutex
	ports    map[int]*port
	exiting  bool
	idle     *time.Timer
	done     chan struct{} // closed when the process is to exit
	handover bool          // a successor took over: it accepts on the same sockets while this one drains

	conns sync.WaitGroup
}

// port is one public port the process holds.
type port struct {
	num   int
	owner string
	ln    net.Listener // the held socket; nothing accepts on it directly
	px    *proxy.Proxy // nil until it has a backend or serves
	acc   net.Listener // the duplicate px accepts on; nil while not serving
}

// Main runs the proxy process for root until ctx is done, or until it has
// held no port for a while, or until a successor took over. It returns
// once the requests in flight have finished (within a bound).
func Main(ctx context.Context, root string, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// No terminal to lose (the agent starts it in a session of its own),
	// and a log reader that went away must not kill the process that holds
	// every public port.
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
	s := &server{
		root:  root,
		path:  filepath.Join(root, SocketFile),
		log:   log,
		args:  os.Args[1:],
		ports: map[int]*port{},
		done:  make(chan struct{}),
	}
	ready, err := readyPipe()
	if err != nil {
		return err
	}
	if err := s.takeState(); err != nil {
		return err
	}
	if err := s.listen(); err != nil {
		s.closeAll(context.Background())
		return err
	}
	s.mu.Lock()
	s.armIdle()
	s.mu.Unlock()
	log.Info("proxy process serving", keyPID, os.Getpid(), "ports", len(s.ports), "socket", s.path)
	if ready != nil {
		ready.Write([]byte("ready\n"))
		ready.Close()
	}
	go s.acceptLoop()
	select {
	case <-ctx.Done():
		s.mu.Lock()
		if !s.exiting {
			s.exiting = true
			s.removeSocket()
			s.ctl.Close()
			close(s.done)
		}
		s.mu.Unlock()
	case <-s.done:
	}
	s.drainAll()
	s.conns.Wait()
	log.Info("proxy process exiting", keyPID, os.Getpid())
	return nil
}

// readyPipe is the pipe the starter waits on, if there is one.
func readyPipe() (*os.File, error) {
	v := os.Getenv(envReadyFD)
	os.Unsetenv(envReadyFD)
	if v == "" {
		return nil, nil
	}
	fd, err := strconv.Atoi(v)
	if err != nil {
		return nil, fmt.Errorf("proxy: %s=%q: %w", envReadyFD, v, err)
	}
	syscall.CloseOnExec(fd) // a successor must not hold its predecessor's pipe
	return os.NewFile(uintptr(fd), "ready"), nil
}

// listen makes the control socket. A successor binds a new path and
// renames it over the old one, so that the socket is never missing; a
// first process refuses to take the place of one that still answers.
func (s *server) listen() error {
	if err := os.MkdirAll(s.root, 0o755); err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	if len(s.ports) == 0 {
		if c, err := net.DialTimeout("unixpacket", s.path, time.Second); err == nil {
			c.Close()
			return fmt.Errorf("proxy: another proxy process answers on %s", s.path)
		}
	}
	tmp := fmt.Sprintf("%s.%d", s.path, os.Getpid())
	os.Remove(tmp)
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: tmp, Net: "unixpacket"})
	if err != nil {
		return fmt.Errorf("proxy: control socket: %w", err)
	}
	// The path is renamed and removed by this process only, when it knows
	// it is still its own.
	l.SetUnlinkOnClose(false)
	os.Chmod(tmp, 0o600)
	if err := os.Rename(tmp, s.path); err != nil {
		l.Close()
		os.Remove(tmp)
		return fmt.Errorf("proxy: control socket: %w", err)
	}
	s.ctl = l
	return nil
}

// removeSocket removes the control socket path if it is still this
// process's (a successor's replaces it). The caller holds s.mu.
func (s *server) removeSocket() {
	if s.handover {
		return
	}
	os.Remove(s.path)
}

func (s *server) acceptLoop() {
	for {
		c, err := s.ctl.AcceptUnix()
		if err != nil {
			return
		}
		s.conns.Go(func() {
			defer c.Close()
			s.handle(c)
		})
	}
}

// armIdle starts the countdown to exit when no port is held. The caller
// holds s.mu.
func (s *server) armIdle() {
	if len(s.ports) > 0 || s.exiting || s.idle != nil {
		return
	}
	s.idle = time.AfterFunc(idleExit, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.idle = nil
		if len(s.ports) > 0 || s.exiting {
			return
		}
		s.log.Info("proxy process holds no port; exiting")
		s.exiting = true
		s.removeSocket()
		s.ctl.Close()
		close(s.done)
	})
}

func (s *server) disarmIdle() {
	if s.idle != nil {
		s.idle.Stop()
		s.idle = nil
	}
}

func (s *server) handle(c *net.UnixConn) {
	var req request
	f, err := receive(c, &req)
	if err != nil {
		return
	}
	if f != nil && req.Op != opHold {
		f.Close()
		f = nil
	}
	fail := func(err error) { send(c, reply{Error: err.Error()}, -1) }
	s.mu.Lock()
	exiting := s.exiting
	s.mu.Unlock()
	if exiting && req.Op != opInfo && req.Op != opWatch {
		if f != nil {
			f.Close()
		}
		send(c, reply{Error: "the proxy process is exiting", Exiting: true}, -1)
		return
	}
	switch req.Op {
	case opInfo:
		send(c, reply{Info: s.info(), Exiting: exiting}, -1)
	case opOpen:
		s.open(c, req)
	case opHold:
		if err := s.hold(req, f); err != nil {
			fail(err)
			return
		}
		send(c, reply{Held: true, Owner: req.Owner}, -1)
	case opAdd, opSync:
		if err := s.backends(req); err != nil {
			fail(err)
			return
		}
		send(c, reply{}, -1)
	case opRemove:
		px, err := s.proxyOf(req.Port, false)
		if err == nil && px != nil {
			ctx, cancel := context.WithTimeout(context.Background(), req.timeout(drainBound))
			err = px.RemoveThen(ctx, req.Backend, func() { send(c, reply{Event: "quiet"}, -1) })
			cancel()
		}
		if err != nil {
			fail(err)
			return
		}
		send(c, reply{}, -1)
	case opServe:
		if err := s.serve(req.Port, req.On, req.timeout(drainBound)); err != nil {
			fail(err)
			return
		}
		send(c, reply{}, -1)
	case opClose:
		s.closePorts([]int{req.Port}, req.timeout(drainBound))
		send(c, reply{}, -1)
	case opRetain:
		s.mu.Lock()
		var drop []int
		for n := range s.ports {
			if !slices.Contains(req.Ports, n) {
				drop = append(drop, n)
			}
		}
		s.mu.Unlock()
		s.closePorts(drop, req.timeout(drainBound))
		send(c, reply{}, -1)
	case opWatch:
		s.watch(c)
	case opUpgrade:
		if err := s.upgrade(req.Self); err != nil {
			fail(err)
			return
		}
		send(c, reply{}, -1)
	default:
		fail(fmt.Errorf("unknown op %q", req.Op))
	}
}

func (s *server) info() *Info {
	in := &Info{PID: os.Getpid(), Exe: SelfExe()}
	in.StartTicks, _ = startTicks(os.Getpid())
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range slices.Sorted(maps.Keys(s.ports)) {
		p := s.ports[n]
		pi := PortInfo{Port: n, Owner: p.owner, Serving: p.acc != nil}
		if p.px != nil {
			pi.Backends = p.px.Backends()
		}
		in.Ports = append(in.Ports, pi)
	}
	return in
}

// open answers with the socket of req.Port when this process holds it.
func (s *server) open(c *net.UnixConn, req request) {
	s.mu.Lock()
	p := s.ports[req.Port]
	var f *os.File
	var err error
	if p != nil {
		f, err = fileOf(p.ln)
	}
	s.mu.Unlock()
	if p == nil {
		send(c, reply{}, -1)
		return
	}
	if err != nil {
		send(c, reply{Error: fmt.Sprintf("port %d: %v", req.Port, err)}, -1)
		return
	}
	defer f.Close()
	send(c, reply{Held: true, Owner: p.owner}, int(f.Fd()))
}

// hold keeps the listening socket f for req.Port.
func (s *server) hold(req request, f *os.File) error {
	if f == nil {
		return errors.New("hold: no socket came with the request")
	}
	defer f.Close()
	got, err := listenerPort(f)
	if err != nil {
		return fmt.Errorf("hold port %d: %w", req.Port, err)
	}
	if got != req.Port {
		return fmt.Errorf("hold port %d: the socket is bound to port %d", req.Port, got)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.ports[req.Port]; p != nil {
		if p.owner != req.Owner {
			return fmt.Errorf("port %d is held for %s", req.Port, p.owner)
		}
		return nil // a duplicate of the socket it holds: the port is one socket
	}
	ln, err := net.FileListener(f)
	if err != nil {
		return fmt.Errorf("hold port %d: %w", req.Port, err)
	}
	s.ports[req.Port] = &port{num: req.Port, owner: req.Owner, ln: ln}
	s.disarmIdle()
	s.log.Info("holding port", keyPort, req.Port, keyOwner, req.Owner)
	return nil
}

// proxyOf is the proxy of port n, made when create is set.
func (s *server) proxyOf(n int, create bool) (*proxy.Proxy, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.ports[n]
	if p == nil {
		return nil, fmt.Errorf("port %d is not held here", n)
	}
	if p.px == nil && create {
		p.px = proxy.New(proxy.Options{Logger: s.log.With(keyPort, n, keyOwner, p.owner)})
	}
	return p.px, nil
}

// backends adds req.Backend, or makes req.Backends the rotation (sync):
// the backends it drops drain in the background.
func (s *server) backends(req request) error {
	px, err := s.proxyOf(req.Port, true)
	if err != nil {
		return err
	}
	if req.Op == opAdd {
		px.Add(req.Backend)
		return nil
	}
	for _, b := range req.Backends {
		px.Add(b)
	}
	for _, b := range px.Backends() {
		if !slices.Contains(req.Backends, b) {
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), drainBound)
				defer cancel()
				px.Remove(ctx, b)
			}()
		}
	}
	return nil
}

// serve starts or stops proxying port n. Stopping leaves the socket to
// whoever else accepts on it (handoff instances): the proxy stops
// accepting, tells its keep-alive clients to reconnect for lameDuck, and
// waits (up to bound) for the requests in flight.
func (s *server) serve(n int, on bool, bound time.Duration) error {
	if on {
		if _, err := s.proxyOf(n, true); err != nil {
			return err
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		p := s.ports[n]
		if p == nil {
			return fmt.Errorf("port %d is not held here", n)
		}
		if p.acc != nil {
			return nil
		}
		acc, err := dupListener(p.ln)
		if err != nil {
			return fmt.Errorf("port %d: %w", n, err)
		}
		p.acc = acc
		go p.px.Serve(acc)
		s.log.Info("proxying", keyPort, n, keyOwner, p.owner)
		return nil
	}
	s.mu.Lock()
	p := s.ports[n]
	if p == nil || p.acc == nil {
		s.mu.Unlock()
		return nil
	}
	acc, px := p.acc, p.px
	p.acc, p.px = nil, nil
	s.mu.Unlock()
	closeAccepting(acc, n)
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	px.LameDuck(ctx, lameDuck)
	if err := px.Shutdown(ctx); err != nil {
		s.log.Warn("stopped proxying before every request finished", keyPort, n, keyErr, err)
	}
	s.log.Info("stopped proxying", keyPort, n)
	return nil
}

// closePorts stops serving ports ns, waits up to bound for their requests,
// and closes their sockets.
func (s *server) closePorts(ns []int, bound time.Duration) {
	s.mu.Lock()
	var ps []*port
	for _, n := range ns {
		if p := s.ports[n]; p != nil {
			ps = append(ps, p)
			delete(s.ports, n)
		}
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Go(func() {
			p.shutdown(ctx, 0)
			p.ln.Close()
			s.log.Info("closed port", keyPort, p.num, keyOwner, p.owner)
		})
	}
	wg.Wait()
	s.mu.Lock()
	s.armIdle()
	s.mu.Unlock()
}

// shutdown stops the port's proxy: it stops accepting, and, with lame > 0
// (someone else accepts on the socket meanwhile), tells keep-alive clients
// to reconnect for that long before closing their idle connections.
func (p *port) shutdown(ctx context.Context, lame time.Duration) {
	if p.acc != nil {
		closeAccepting(p.acc, p.num)
	}
	if p.px == nil {
		return
	}
	if lame > 0 && p.acc != nil {
		p.px.LameDuck(ctx, lame)
	}
	p.px.Shutdown(ctx)
}

// watch holds c open until the process exits or the peer hangs up: an
// agent learns so that its proxy process is gone.
func (s *server) watch(c *net.UnixConn) {
	peer := make(chan struct{})
	go func() {
		var req request
		receive(c, &req) // returns when the peer closes
		close(peer)
	}()
	select {
	case <-s.done:
	case <-peer:
	}
}

// drainAll, on the way out, stops proxying every port and waits for its
// requests; a successor accepts on the same sockets meanwhile.
func (s *server) drainAll() {
	s.mu.Lock()
	ps := slices.Collect(maps.Values(s.ports))
	handover := s.handover
	s.mu.Unlock()
	lame := time.Duration(0)
	if handover {
		lame = lameDuck
	}
	ctx, cancel := context.WithTimeout(context.Background(), drainBound)
	defer cancel()
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Go(func() {
			p.shutdown(ctx, lame)
			p.ln.Close()
		})
	}
	wg.Wait()
}

func (s *server) closeAll(ctx context.Context) {
	for _, p := range s.ports {
		p.shutdown(ctx, 0)
		p.ln.Close()
	}
}

// handedPort is one port in a handover.
type handedPort struct {
	Port     int      `json:"port"`
	Owner    string   `json:"owner"`
	FD       int      `json:"fd"`
	Serving  bool     `json:"serving"`
	Backends []string `json:"backends,omitempty"`
}

// upgrade hands every port to a new proxy process running self, the way
// the agent upgraded itself before it had a proxy process (einhorn,
// tableflip): the successor gets the sockets and the backends, serves the
// same sockets, and replaces the control socket; then this process stops
// accepting, lets its requests finish and exits. Requests for the port
// never see it closed.
func (s *server) upgrade(self string) error {
	if self == "" {
		return errors.New("upgrade: no binary to upgrade to")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.exiting {
		return errors.New("upgrade: the proxy process is exiting")
	}
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("upgrade: %w", err)
	}
	defer r.Close()
	cmd := exec.Command(self, s.args...)
	cmd.Dir, cmd.Stderr = s.root, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	var state []handedPort
	for _, n := range slices.Sorted(maps.Keys(s.ports)) {
		p := s.ports[n]
		f, err := fileOf(p.ln)
		if err != nil {
			w.Close()
			return fmt.Errorf("upgrade: port %d: %w", n, err)
		}
		defer f.Close()
		cmd.ExtraFiles = append(cmd.ExtraFiles, f)
		hp := handedPort{Port: n, Owner: p.owner, FD: 2 + len(cmd.ExtraFiles), Serving: p.acc != nil}
		if p.px != nil {
			hp.Backends = p.px.Backends()
		}
		state = append(state, hp)
	}
	cmd.ExtraFiles = append(cmd.ExtraFiles, w)
	b, _ := json.Marshal(state)
	cmd.Env = append(os.Environ(), envState+"="+string(b), fmt.Sprintf("%s=%d", envReadyFD, 2+len(cmd.ExtraFiles)))
	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("upgrade: start %s: %w", self, err)
	}
	w.Close()
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
	case <-time.After(handoverTimeout):
		err = fmt.Errorf("it did not serve within %v", handoverTimeout)
	}
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return fmt.Errorf("upgrade: new proxy process (pid %d): %w", cmd.Process.Pid, err)
	}
	go cmd.Wait() // reaped here if it exits before this process does
	s.log.Info("proxy process upgraded; draining and exiting", "successor", cmd.Process.Pid)
	s.handover, s.exiting = true, true
	s.disarmIdle()
	s.ctl.Close()
	close(s.done)
	return nil
}

// takeState takes up what an upgrading proxy process handed this one.
func (s *server) takeState() error {
	v := os.Getenv(envState)
	os.Unsetenv(envState)
	if v == "" {
		return nil
	}
	var state []handedPort
	if err := json.Unmarshal([]byte(v), &state); err != nil {
		return fmt.Errorf("proxy: %s: %w", envState, err)
	}
	for _, hp := range state {
		f := os.NewFile(uintptr(hp.FD), fmt.Sprintf("port %d", hp.Port))
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			s.closeAll(context.Background())
			return fmt.Errorf("proxy: inherited port %d: %w", hp.Port, err)
		}
		p := &port{num: hp.Port, owner: hp.Owner, ln: ln}
		s.ports[hp.Port] = p
		if len(hp.Backends) > 0 || hp.Serving {
			p.px = proxy.New(proxy.Options{Logger: s.log.With(keyPort, hp.Port, keyOwner, hp.Owner)})
			for _, b := range hp.Backends {
				p.px.Add(b)
			}
		}
		if hp.Serving {
			acc, err := dupListener(ln)
			if err != nil {
				s.closeAll(context.Background())
				return fmt.Errorf("proxy: inherited port %d: %w", hp.Port, err)
			}
			p.acc = acc
			go p.px.Serve(acc)
		}
	}
	return nil
}

// fileOf is a duplicate of a listener's socket, as a file that leaves the
// socket non-blocking (see listenfd.File).
func fileOf(ln net.Listener) (*os.File, error) { return listenfd.File(ln) }

// closeAccepting closes ln, a listener on port that a goroutine accepts
// on. Closing wakes an accept waiting in Go's poller, but not one blocked
// in the kernel: that happens when another process sharing the socket (a
// handoff app) has made it blocking, as the mode belongs to the socket. A
// connection of this process's own to the port then wakes it (whoever
// accepts that connection sees it closed at once).
func closeAccepting(ln net.Listener, port int) {
	done := make(chan struct{})
	go func() {
		ln.Close()
		close(done)
	}()
	for {
		select {
		case <-done:
			return
		case <-time.After(100 * time.Millisecond):
			if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err == nil {
				c.Close()
			}
		}
	}
}

// dupListener is a second listener on ln's socket: closing it stops
// whoever accepts on it and leaves the socket open.
func dupListener(ln net.Listener) (net.Listener, error) {
	f, err := fileOf(ln)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return net.FileListener(f)
}

// startTicks is pid's start time, which with the pid names a process
// across pid reuse.
func startTicks(pid int) (uint64, error) {
	st, err := procinfo.ReadStat(pid)
	return st.StartTicks, err
}
