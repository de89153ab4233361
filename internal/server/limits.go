package server

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/ferrydeploy/ferry"
)

// What one client can hold: the defaults of Config's limits.
const (
	// DefaultMaxConnsPerIP: an agent holds three connections (its
	// blocking desired-state query, its wait for log requests, its
	// reports), four while it downloads; 256 lets some 60 agents share
	// one NAT address and keeps one address from holding more than a
	// small part of what the fd limit allows.
	DefaultMaxConnsPerIP = 256
	// DefaultMaxArtifactSize is far above any artifact ferry build makes
	// for a service, and below what fills a small server's disk at once.
	DefaultMaxArtifactSize = 2 << 30
	// DefaultBodyTimeout bounds a JSON request body, which is at most
	// maxBody and comes at once from a real client.
	DefaultBodyTimeout = 30 * time.Second
	// DefaultUploadStall is how long an upload may go without a byte:
	// slow links are fine, dead ones are not.
	DefaultUploadStall = time.Minute

	// idleTimeout closes a kept-alive connection with no request for this
	// long. Clients drop theirs after 90 s (http.DefaultTransport, which
	// client.New clones) and agents send a report every few seconds, so
	// the server is never the one that closes a connection a client is
	// about to reuse.
	idleTimeout = 2 * time.Minute
	// fewConns is what a single host holds at most (an agent downloading,
	// a health checker): the last slots before MaxConns go only to
	// addresses holding fewer, so that addresses that each hold many
	// cannot shut out the rest.
	fewConns = 8
	// warnEvery spaces the warnings about refused connections: a flood
	// must not flood the log too.
	warnEvery = 10 * time.Second
)

func (c *Config) bodyTimeout() time.Duration {
	if c.BodyTimeout > 0 {
		return c.BodyTimeout
	}
	return DefaultBodyTimeout
}

func (c *Config) uploadStall() time.Duration {
	if c.UploadStall > 0 {
		return c.UploadStall
	}
	return DefaultUploadStall
}

func (c *Config) maxArtifactSize() int64 {
	if c.MaxArtifactSize > 0 {
		return c.MaxArtifactSize
	}
	return DefaultMaxArtifactSize
}

// connCaps is the global and per-address connection caps for the
// configured ones and the soft limit on open files: a quarter of that
// limit (at least 64) is left for what is not a connection (the state
// file, artifacts being stored or served, one per upload or download), so
// a full server still opens the files its connections need. clamped says
// that maxConns asked for more than that.
func connCaps(maxConns, perIP int, nofile uint64) (total, perAddr int, clamped bool) {
	const ceiling = 1 << 30 // an "unlimited" fd limit still fits an int
	n := int(min(nofile, ceiling))
	bound := max(n-max(n/4, 64), 1)
	total = maxConns
	if total <= 0 || total > bound {
		clamped = total > bound
		total = bound
	}
	switch {
	case perIP == 0:
		perAddr = DefaultMaxConnsPerIP
	case perIP > 0:
		perAddr = perIP
	}
	return total, perAddr, clamped
}

// fdLimit is the process's soft limit on open files (which the Go runtime
// has already raised to the hard limit).
func fdLimit() uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 1024
	}
	return rl.Cur
}

// connLimiter is a listener that counts the connections it has handed out
// until each is closed, in all and per client address, and closes at once
// those over the caps, so that one address cannot take every connection
// the server can hold and many cannot exhaust its file descriptors.
// Connections are refused rather than left in the accept queue, where
// they would stall everyone's.
type connLimiter struct {
	net.Listener
	max     int
	perAddr int // 0: no per-address cap
	reserve int // the last slots before max, for addresses with fewer than fewConns
	log     *slog.Logger

	mu      sync.Mutex
	open    int
	byAddr  map[string]int
	refused int // since the last warning
	warned  time.Time
}

func newConnLimiter(ln net.Listener, total, perAddr int, log *slog.Logger) *connLimiter {
	return &connLimiter{Listener: ln, max: total, perAddr: perAddr, reserve: total / 16, log: log, byAddr: map[string]int{}}
}

func (l *connLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		key := addrKey(c.RemoteAddr())
		if over := l.admit(key); over != "" {
			// A reset rather than a FIN: no TIME_WAIT left behind per
			// refused connection of a flood.
			if tc, ok := c.(*net.TCPConn); ok {
				tc.SetLinger(0)
			}
			c.Close()
			l.noteRefused(key, over)
			continue
		}
		return &limitedConn{Conn: c, l: l, key: key}, nil
	}
}

// admit counts a connection from key in, or says which cap it is over.
func (l *connLimiter) admit(key string) (over string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := l.byAddr[key]
	switch {
	case l.perAddr > 0 && n >= l.perAddr:
		return "--max-conns-per-ip"
	case l.open >= l.max, l.open >= l.max-l.reserve && n >= fewConns:
		return "--max-conns"
	}
	l.open++
	l.byAddr[key] = n + 1
	return ""
}

func (l *connLimiter) release(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if l.byAddr[key]--; l.byAddr[key] <= 0 {
		delete(l.byAddr, key)
	}
}

func (l *connLimiter) noteRefused(key, over string) {
	l.mu.Lock()
	l.refused++
	if time.Since(l.warned) < warnEvery {
		l.mu.Unlock()
		return
	}
	n, open, held := l.refused, l.open, l.byAddr[key]
	l.refused, l.warned = 0, time.Now()
	l.mu.Unlock()
	l.log.Warn("refusing connections over a limit; raise it if these are real clients (agents behind one NAT address, a proxy)",
		"limit", over, "refused", n, "addr", key, "addr_conns", held, "conns", open, "max_conns", l.max, "max_conns_per_ip", l.perAddr)
}

// limitedConn gives its slot back when closed.
type limitedConn struct {
	net.Conn
	l    *connLimiter
	key  string
	once sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.key) })
	return err
}

// addrKey is the client address a connection counts against: its IPv4
// address, or its IPv6 /64, which one client usually has whole.
func addrKey(a net.Addr) string {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return a.String()
	}
	ip := ap.Addr().Unmap()
	if ip.Is4() {
		return ip.String()
	}
	p, _ := ip.WithZone("").Prefix(64)
	return p.String()
}

// limitBodies bounds how long each request body may take to arrive: all of
// it within the body timeout, from the end of the headers, unless the
// handler, once it knows who is sending, lets it stream (streamBody). A
// request without a body (blocking queries, followed logs) gets no
// deadline at all: the connection's reads are then the server's own.
func (s *Server) limitBodies(h http.Handler) http.Handler {
	timeout := s.cfg.bodyTimeout()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody {
			h.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		if rc.SetReadDeadline(time.Now().Add(timeout)) != nil {
			h.ServeHTTP(w, r)
			return
		}
		b := &timedBody{ReadCloser: r.Body, rc: rc, hdr: w.Header(), limit: timeout}
		// A copy: the server's own request must keep its body, whose
		// type tells it how to finish the request (an unanswered
		// 100-continue is not read, a big rest is not drained).
		r = r.WithContext(r.Context())
		r.Body = b
		h.ServeHTTP(w, r)
		// What the handler left unread the server reads on to reuse
		// the connection: bound that too when the handler lifted the
		// bound (a log stream whose viewer went away).
		b.mu.Lock()
		if !b.ended && b.mode != fixedDeadline {
			rc.SetReadDeadline(time.Now().Add(timeout))
		}
		b.mu.Unlock()
	})
}

// How a timedBody bounds its reads.
const (
	fixedDeadline    = iota // all of it by a fixed time
	progressDeadline        // no gap of idle between bytes
	noDeadline              // as long as it takes
)

// timedBody is a request body under a read deadline on its connection.
type timedBody struct {
	io.ReadCloser
	rc    *http.ResponseController
	hdr   http.Header
	limit time.Duration // of a fixed deadline, for the message

	mu    sync.Mutex
	mode  int
	idle  time.Duration // of a progress deadline
	ended bool          // read to its end (or failed): no deadline is left
}

func (b *timedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		b.ended = true
		// The rest of the body will not come in time: do not wait
		// for it to reuse the connection.
		b.hdr.Set("Connection", "close")
		if b.mode == progressDeadline {
			return n, ferry.Errorf(ferry.EINVALID, "request body: nothing arrived for %s, and the server drops a body that stalls that long", b.idle)
		}
		return n, ferry.Errorf(ferry.EINVALID, "not all there after %s, and the server drops a body that takes longer: send it at once", b.limit)
	case err != nil:
		// The end: from here on the connection is read only by the
		// server, watching for the client to go away while the handler
		// runs, which a deadline must not cut short.
		b.ended = true
		b.rc.SetReadDeadline(time.Time{})
	case n > 0 && b.mode == progressDeadline:
		b.rc.SetReadDeadline(time.Now().Add(b.idle))
	}
	return n, err
}

// streamBody lets r's body, long by design, take as long as it needs
// while bytes keep coming with no gap of idle, or with no bound at all
// when idle is 0. Handlers call it once they know the sender may hold the
// connection that long (authenticated, and of the role the route needs).
func streamBody(r *http.Request, idle time.Duration) {
	b, ok := r.Body.(*timedBody)
	if !ok {
		return // a request the UI makes in-process: no connection to bound
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ended {
		return
	}
	if idle <= 0 {
		b.mode = noDeadline
		b.rc.SetReadDeadline(time.Time{})
		return
	}
	b.mode, b.idle = progressDeadline, idle
	b.rc.SetReadDeadline(time.Now().Add(idle))
}
