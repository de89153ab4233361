// Package proxy is the host agent's reverse proxy for an app process's
// public port. The agent, not the app, owns the port so that an upgrade never
// fails a request: it starts the new instance on an ephemeral loopback port,
// waits until it is ready, Adds it, Removes the old one — which waits for the
// old instance's requests and then closes the proxy's connections to it —
// and only then stops the old process. Since the proxy is the old
// instance's only client, no request can race a closing keep-alive
// connection.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Log keys.
const (
	keyBackend = "backend"
	keyErr     = "err"
	keyMethod  = "method"
	keyPath    = "path"
)

const (
	defaultUpgradedDrain = 10 * time.Second
	defaultNoBackendWait = 10 * time.Second
	// readHeaderTimeout bounds a client that opens a connection and sends
	// its request line and headers slowly, holding the public port's
	// resources; bodies may take as long as they take.
	readHeaderTimeout = 10 * time.Second
	// idleTimeout is how long the public side keeps a client's idle
	// keep-alive connection.
	idleTimeout = 2 * time.Minute
)

// Options configure a Proxy. The zero value is usable.
type Options struct {
	Logger *slog.Logger
	// UpgradedDrain is how long upgraded (WebSocket) connections and event
	// streams to a removed backend may stay open before the proxy closes
	// them; default 10s.
	UpgradedDrain time.Duration
	// NoBackendWait is how long a request arriving while no backend is in
	// rotation waits for one before it is answered 503; default 10s.
	NoBackendWait time.Duration
	// ErrorLogEvery is the least time between two lines about the failed
	// requests of one backend: more failures within it are counted and
	// summed up in one line; default 1s.
	ErrorLogEvery time.Duration
}

// Proxy forwards HTTP requests to the backends in rotation. It is an
// http.Handler, so it can also be mounted in another server.
type Proxy struct {
	opt  Options
	log  *slog.Logger
	errs *errorLog
	srv  *http.Server
	done chan struct{} // closed by Shutdown
	stop sync.Once

	mu       sync.Mutex
	rotation []*backend
	draining map[*backend]struct{}
	next     int           // round-robin position
	added    chan struct{} // closed and replaced when a backend is added

	waiting atomic.Int64 // requests waiting for a backend
	closing atomic.Bool  // LameDuck: every response says Connection: close
}

// LameDuck makes every response, for d, tell its client to close the
// connection, then returns. A proxy about to Shutdown while another process
// accepts on the same socket (an agent upgrading itself) calls it first, so
// keep-alive clients move to new connections instead of racing the close of
// an idle one.
func (p *Proxy) LameDuck(ctx context.Context, d time.Duration) {
	p.closing.Store(true)
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// New returns a Proxy with no backends.
func New(opt Options) *Proxy {
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if opt.UpgradedDrain <= 0 {
		opt.UpgradedDrain = defaultUpgradedDrain
	}
	if opt.NoBackendWait <= 0 {
		opt.NoBackendWait = defaultNoBackendWait
	}
	p := &Proxy{
		opt:      opt,
		log:      opt.Logger,
		errs:     newErrorLog(opt.Logger, opt.ErrorLogEvery),
		done:     make(chan struct{}),
		draining: make(map[*backend]struct{}),
		added:    make(chan struct{}),
	}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true) // when l is a TLS listener
	protocols.SetUnencryptedHTTP2(true)
	p.srv = &http.Server{
		Handler:           p,
		Protocols:         &protocols,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          p.errs.stdLogger(""),
	}
	return p
}

// Serve accepts connections on l, speaking HTTP/1.1 and HTTP/2 with prior
// knowledge (h2c), until Shutdown; then it returns nil. Several listeners
// may be served at once.
func (p *Proxy) Serve(l net.Listener) error {
	err := p.srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("proxy: serve %s: %w", l.Addr(), err)
}

// Add puts the backend at addr (host:port, normally on loopback) in
// rotation. Adding an address already in rotation does nothing.
func (p *Proxy) Add(addr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if slices.ContainsFunc(p.rotation, func(b *backend) bool { return b.addr == addr }) {
		return
	}
	p.rotation = append(p.rotation, newBackend(p, addr))
	close(p.added)
	p.added = make(chan struct{})
}

// Remove takes addr out of rotation at once, so new requests go to other
// backends; waits until its in-flight requests finish or ctx is done; gives
// its upgraded connections and event streams until UpgradedDrain and then
// closes them; and closes the proxy's connections to it. After Remove
// returns the instance may be stopped. It returns ctx.Err() when ctx cut
// the drain short: requests still in flight then go on, and their
// connections close as they finish. Removing an address that is not in
// rotation waits for an earlier Remove of it that is still draining.
func (p *Proxy) Remove(ctx context.Context, addr string) error {
	return p.RemoveThen(ctx, addr, nil)
}

// RemoveThen is Remove that calls quiet, once, as soon as addr's ordinary
// requests have finished while its upgraded connections and event streams
// may still be open (or when ctx cuts the drain short). The caller can then
// ask the instance to stop, so that it closes those itself (a WebSocket
// close frame, a last event) within UpgradedDrain, instead of having them
// cut. quiet may be nil.
func (p *Proxy) RemoveThen(ctx context.Context, addr string, quiet func()) error {
	var once sync.Once
	if quiet == nil {
		quiet = func() {}
	}
	quietOnce := func() { once.Do(quiet) }
	defer quietOnce()
	p.mu.Lock()
	var gone []*backend
	p.rotation = slices.DeleteFunc(p.rotation, func(b *backend) bool {
		if b.addr != addr {
			return false
		}
		gone = append(gone, b)
		p.draining[b] = struct{}{}
		return true
	})
	for b := range p.draining {
		if b.addr == addr && !slices.Contains(gone, b) {
			gone = append(gone, b)
		}
	}
	p.mu.Unlock()

	// A backend stays in p.draining until its last request ends, which
	// can be after a drain cut short, so that InFlight still counts it.
	var err error
	for _, b := range gone {
		if derr := b.drain(ctx, p.opt.UpgradedDrain, quietOnce); derr != nil {
			err = derr
		}
	}
	return err
}

// Backends returns the addresses in rotation, in the order they were added.
func (p *Proxy) Backends() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	addrs := make([]string, len(p.rotation))
	for i, b := range p.rotation {
		addrs[i] = b.addr
	}
	return addrs
}

// InFlight is how many requests, upgraded connections included, are in
// flight to addr, whether it is in rotation or draining.
func (p *Proxy) InFlight(addr string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, b := range p.all() {
		if b.addr == addr {
			n += b.inFlight()
		}
	}
	return n
}

// all returns the backends in rotation and those still draining, forgetting
// those done. The caller holds p.mu.
func (p *Proxy) all() []*backend {
	bs := slices.Clone(p.rotation)
	for b := range p.draining {
		if b.drained() {
			delete(p.draining, b)
			continue
		}
		bs = append(bs, b)
	}
	return bs
}

// Shutdown stops accepting, answers requests waiting for a backend with
// 503, and waits for requests in flight; upgraded connections and event
// streams get UpgradedDrain. When ctx ends first, every connection left is
// closed and ctx.Err() is returned.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.stop.Do(func() { close(p.done) })
	p.mu.Lock()
	bs := p.all()
	p.mu.Unlock()

	// Drain the backends alongside the server: http.Server.Shutdown would
	// wait for an event stream for ever, and does not see hijacked
	// (upgraded) connections at all.
	var wg sync.WaitGroup
	for _, b := range bs {
		wg.Go(func() { b.drain(ctx, p.opt.UpgradedDrain, func() {}) })
	}
	err := p.srv.Shutdown(ctx)
	if err != nil {
		p.srv.Close()
	}
	wg.Wait()
	p.errs.close()
	if err != nil {
		return fmt.Errorf("proxy: shutdown: %w", err)
	}
	return nil
}

// errNoBackend is why a request that found no backend in rotation within
// NoBackendWait, or during Shutdown, is answered 503.
var errNoBackend = errors.New("no backend in rotation")

// pick chooses a backend not in tried, round-robin, passing over ones that
// recently refused a connection while others are available. With none in
// rotation it waits up to NoBackendWait for one to be added; when every
// backend in rotation has been tried it returns errNoBackend at once.
func (p *Proxy) pick(ctx context.Context, tried []*backend) (*flight, error) {
	var timeout <-chan time.Time
	for {
		p.mu.Lock()
		if f := p.pickLocked(tried); f != nil {
			p.mu.Unlock()
			return f, nil
		}
		empty := len(p.rotation) == 0
		added := p.added
		p.mu.Unlock()
		if !empty {
			return nil, errNoBackend
		}
		if timeout == nil {
			t := time.NewTimer(p.opt.NoBackendWait)
			defer t.Stop()
			timeout = t.C
			p.waiting.Add(1)
			defer p.waiting.Add(-1)
		}
		select {
		case <-added:
		case <-timeout:
			return nil, errNoBackend
		case <-p.done:
			return nil, errNoBackend
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (p *Proxy) pickLocked(tried []*backend) *flight {
	n := len(p.rotation)
	now := time.Now().UnixNano()
	var fallback *backend
	for i := range n {
		b := p.rotation[(p.next+i)%n]
		if slices.Contains(tried, b) {
			continue
		}
		if b.down(now) {
			if fallback == nil {
				fallback = b
			}
			continue
		}
		p.next = (p.next + i + 1) % n
		return b.begin()
	}
	if fallback != nil {
		return fallback.begin()
	}
	return nil
}
