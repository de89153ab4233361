package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// idleConnTimeout is shorter than the keep-alive timeout of common app
	// servers (Node's is 5 s), so the proxy drops an idle connection before
	// the app does and never sends a request into one the app is closing.
	idleConnTimeout = 4 * time.Second
	// maxIdlePerBackend keeps a burst's connections for reuse: the
	// Transport's default of 2 would close and redial most of them,
	// filling the loopback with TIME_WAIT sockets.
	maxIdlePerBackend = 256
	// dialTimeout only matters for a backend that is not on loopback; there
	// a dial succeeds or is refused at once.
	dialTimeout = 2 * time.Second
	// downFor is how long a backend that refused a connection is passed
	// over while another one is in rotation.
	downFor = time.Second
)

// errClosed is what dialing a drained backend returns. It is a dial error,
// so the request that asked for the connection is retried elsewhere.
var errClosed = errors.New("backend removed")

// dialError marks an error from connecting to a backend: the request never
// reached it, so it can be sent to another backend whatever its method.
type dialError struct {
	addr string
	err  error
}

func (e *dialError) Error() string { return fmt.Sprintf("dial %s: %v", e.addr, e.err) }
func (e *dialError) Unwrap() error { return e.err }

// backend is one app instance. It has its own Transport so that closing
// idle connections when it is removed touches no other instance, and it
// counts its requests so that Remove knows when it has drained.
type backend struct {
	addr      string
	log       *slog.Logger
	transport *http.Transport
	rp        *httputil.ReverseProxy
	dialer    net.Dialer
	downUntil atomic.Int64 // unix nanoseconds

	mu      sync.Mutex
	active  int                  // requests in flight, not long-lived
	long    map[*flight]struct{} // upgraded connections and event streams
	changed chan struct{}        // closed and replaced when a request ends
	cutLong bool                 // the drain's bound for long-lived ones is past
	// retiring is set when a drain starts: what ends now ends because the
	// instance is being replaced (or the agent is exiting), not by a crash.
	retiring atomic.Bool
	closed   bool // drained: no new connections
	conns    map[*trackedConn]struct{}
}

func newBackend(p *Proxy, addr string) *backend {
	b := &backend{
		addr:    addr,
		log:     p.log.With(keyBackend, addr),
		dialer:  net.Dialer{Timeout: dialTimeout},
		long:    make(map[*flight]struct{}),
		changed: make(chan struct{}),
		conns:   make(map[*trackedConn]struct{}),
	}
	b.transport = &http.Transport{
		Proxy:               nil, // the backend is on this host
		DialContext:         b.dial,
		MaxIdleConnsPerHost: maxIdlePerBackend,
		IdleConnTimeout:     idleConnTimeout,
		// Pass Content-Encoding through untouched; the client asked for it.
		DisableCompression: true,
		WriteBufferSize:    32 << 10,
		ReadBufferSize:     32 << 10,
	}
	b.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = addr
			// Out.Host stays the client's: the app sees the public name,
			// as it would if it owned the port itself.
			pr.Out.Header["X-Forwarded-For"] = pr.In.Header["X-Forwarded-For"]
			pr.SetXForwarded()
		},
		Transport: b.transport,
		// Flush every write: the proxy must not add latency to streams.
		FlushInterval:  -1,
		ErrorLog:       p.errs.stdLogger(addr),
		ErrorHandler:   p.upstreamError,
		ModifyResponse: modifyResponse,
	}
	return b
}

// flight is one request's claim on a backend.
type flight struct {
	b      *backend
	cancel context.CancelFunc // ends the upstream request, closing an upgraded connection
	long   bool
}

// begin counts a new request. The caller holds the Proxy's lock, so a
// Remove that has taken the backend out of rotation sees every request
// that chose it.
func (b *backend) begin() *flight {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.active++
	return &flight{b: b}
}

// promote moves f to the long-lived requests, which a drain waits for only
// until UpgradedDrain: a WebSocket or event stream may never end by itself.
func (f *flight) promote() {
	b := f.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if f.long {
		return
	}
	f.long = true
	b.active--
	b.long[f] = struct{}{}
	if b.cutLong {
		f.cancel()
	}
	b.notifyLocked()
}

func (f *flight) end() {
	b := f.b
	b.mu.Lock()
	if f.long {
		delete(b.long, f)
	} else {
		b.active--
	}
	b.notifyLocked()
	b.mu.Unlock()
	b.closeConns()
}

func (b *backend) notifyLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
}

func (b *backend) inFlight() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.active + len(b.long)
}

// drain waits until b's requests have finished, cutting long-lived ones
// after bound, then closes its connections. It calls quiet (which must be
// idempotent) whenever only long-lived ones are left. When ctx ends first it cuts the
// long-lived ones at once and returns ctx.Err(); the ordinary requests left
// go on, and b's connections close as they finish.
func (b *backend) drain(ctx context.Context, bound time.Duration, quiet func()) error {
	b.retiring.Store(true)
	cut := time.NewTimer(bound)
	defer cut.Stop()
	var err error
	for err == nil {
		b.mu.Lock()
		short := b.active
		done := short == 0 && len(b.long) == 0
		changed := b.changed
		b.mu.Unlock()
		if done {
			break
		}
		if short == 0 {
			quiet()
		}
		select {
		case <-changed:
		case <-cut.C:
			b.cutLongs()
		case <-ctx.Done():
			err = ctx.Err()
			b.cutLongs()
		}
	}
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.closeConns()
	return err
}

// drained reports whether b has been removed and nothing is in flight to it.
func (b *backend) drained() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed && b.active == 0 && len(b.long) == 0
}

func (b *backend) cutLongs() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cutLong = true
	for f := range b.long {
		f.cancel()
	}
}

// closeConns closes a removed backend's idle connections, and once nothing
// is in flight, every connection: then each one is idle, or on its way back
// to the idle pool after a dial that lost a race, which
// CloseIdleConnections alone can miss.
func (b *backend) closeConns() {
	b.mu.Lock()
	if !b.closed {
		b.mu.Unlock()
		return
	}
	var conns []*trackedConn
	if b.active == 0 && len(b.long) == 0 {
		for c := range b.conns {
			conns = append(conns, c)
		}
	}
	b.mu.Unlock()
	b.transport.CloseIdleConnections()
	for _, c := range conns {
		c.Close()
	}
}

func (b *backend) dial(ctx context.Context, network, _ string) (net.Conn, error) {
	c, err := b.dialer.DialContext(ctx, network, b.addr)
	if err != nil {
		return nil, &dialError{addr: b.addr, err: err}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		c.Close()
		return nil, &dialError{addr: b.addr, err: errClosed}
	}
	tc := &trackedConn{Conn: c, b: b}
	b.conns[tc] = struct{}{}
	return tc, nil
}

func (b *backend) markDown() {
	b.downUntil.Store(time.Now().Add(downFor).UnixNano())
}

func (b *backend) down(now int64) bool { return now < b.downUntil.Load() }

// trackedConn lets a drained backend close connections the Transport has
// not yet put back in its idle pool.
type trackedConn struct {
	net.Conn
	b    *backend
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.b.mu.Lock()
		delete(c.b.conns, c)
		c.b.mu.Unlock()
	})
	return c.Conn.Close()
}
