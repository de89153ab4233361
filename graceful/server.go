package graceful

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Defaults for the zero values of Server's durations.
const (
	DefaultLameDuck        = 500 * time.Millisecond
	DefaultShutdownTimeout = 10 * time.Second
)

// ErrForced is returned when a second signal cut a shutdown short. The
// server has been closed and its connections dropped; handlers may still be
// running, so the caller should exit rather than clean up at length.
var ErrForced = errors.New("graceful: shutdown forced by a second signal")

// Server runs an http.Server the way a supervised app should be run: it
// announces readiness, and on SIGTERM or SIGINT it drains instead of
// dropping requests.
//
// The drain, in order:
//
//  1. The listener is closed and "STOPPING=1" sent to $NOTIFY_SOCKET (once
//     STOPPING=1 arrives the listener is already closed). A passed socket
//     stays open in the supervisor and the app's successor, which go on
//     accepting from the same queue.
//  2. For LameDuck, open connections are still served, but every response
//     carries "Connection: close" (over HTTP/2 that becomes a GOAWAY), so a
//     client learns from a reply, not from a reset, that it must reconnect.
//     Keep-alives are not switched off yet: net/http's
//     SetKeepAlivesEnabled(false) closes idle connections at once, which is
//     exactly the race a client reusing one would lose.
//  3. Keep-alives are switched off and http.Server.Shutdown waits up to
//     ShutdownTimeout for in-flight requests, then the server is closed.
//
// A second signal during the drain closes the server at once and makes Serve
// return ErrForced. Once Serve has returned, the signals have their default
// effect again. Signals the process ignores (signal.Ignored, for example
// under nohup, or SIGTERM after signal.Ignore) are left ignored.
type Server struct {
	// HTTP is the server to run. Serve wraps its Handler (nil means
	// http.DefaultServeMux) and, when its Protocols is nil, enables HTTP/1
	// and unencrypted HTTP/2 (h2c with prior knowledge), so HTTP/2 clients
	// get a GOAWAY rather than a closed connection. HTTP.Addr is the address
	// ListenAndServe passes to Listen.
	HTTP *http.Server

	// LameDuck is how long open connections are still served after the
	// signal; 0 means DefaultLameDuck, negative means none.
	LameDuck time.Duration

	// ShutdownTimeout bounds the wait for in-flight requests after the lame
	// duck; 0 means DefaultShutdownTimeout.
	ShutdownTimeout time.Duration

	// Ready, when not nil, delays READY=1 until it is closed, for an app
	// that must warm up before taking traffic. On its own port the server
	// already answers meanwhile (a health check can say 503); on a socket
	// passed in by a supervisor, which an older copy may still be serving,
	// it does not accept until Ready. Nil means ready once serving.
	Ready <-chan struct{}

	// OnShutdown functions run concurrently when the drain starts, for
	// connections http.Server does not track: hijacked ones (WebSockets) and
	// long streams should tell their peer to reconnect and return once it
	// has. Their context ends when ShutdownTimeout has passed after the lame
	// duck, or on a second signal; Serve waits for them until then.
	// (http.Server.RegisterOnShutdown functions still run too, when Shutdown
	// is called after the lame duck, and are not waited for.)
	OnShutdown []func(ctx context.Context)

	draining atomic.Bool
}

// ListenAndServe serves on Listen(s.HTTP.Addr), ":http" when empty; see
// Serve.
func (s *Server) ListenAndServe(ctx context.Context) error {
	addr := s.HTTP.Addr
	if addr == "" {
		addr = ":http"
	}
	l, err := Listen(addr)
	if err != nil {
		return err
	}
	return s.Serve(ctx, l)
}

// Serve serves on l until a signal, or the end of ctx, starts the drain, and
// returns nil once the drain finished cleanly. Serve closes l. It returns an
// error when serving failed, when in-flight requests or OnShutdown functions
// outlasted ShutdownTimeout, or ErrForced. A READY=1 that cannot be
// delivered is logged to HTTP.ErrorLog (the log package's logger when nil),
// not returned.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	srv := s.HTTP
	if srv.Protocols == nil {
		p := new(http.Protocols)
		p.SetHTTP1(true)
		p.SetUnencryptedHTTP2(true)
		srv.Protocols = p
	}
	h := srv.Handler
	if h == nil {
		h = http.DefaultServeMux
	}
	srv.Handler = s.closeWhenDraining(h)
	s.draining.Store(false)

	sigs := make(chan os.Signal, 2)
	if watched := unignored(syscall.SIGTERM, os.Interrupt); len(watched) > 0 {
		signal.Notify(sigs, watched...)
	}
	defer signal.Stop(sigs)

	served := make(chan error, 1)
	serve := func() { go func() { served <- srv.Serve(l) }() }
	_, shared := passedListeners.Load(l)
	if !shared || s.Ready == nil {
		serve()
	} else {
		defer passedListeners.Delete(l)
	}

	ready := s.Ready
	if ready == nil {
		// The listener is bound, so connections already queue in the
		// kernel: that is ready, whether or not Accept has run yet.
		now := make(chan struct{})
		close(now)
		ready = now
	}
wait:
	for {
		select {
		case <-ready:
			ready = nil
			if shared && s.Ready != nil {
				serve()
			}
			if err := notify("READY=1"); err != nil {
				// Serving on is better than failing: ferry's agent falls
				// back to its health check, and a NOTIFY_SOCKET leaked from
				// a parent must not kill the app. net/http reports its own
				// serving trouble the same way.
				logf(srv, "%v", err)
			}
		case err := <-served:
			if errors.Is(err, http.ErrServerClosed) {
				return nil // the app shut HTTP down itself
			}
			srv.Close()
			return fmt.Errorf("graceful: serve: %w", err)
		case <-ctx.Done():
			break wait
		case <-sigs:
			break wait
		}
	}
	return s.drain(l, sigs)
}

// drain runs the steps described on Server once the drain has started.
func (s *Server) drain(l net.Listener, sigs <-chan os.Signal) error {
	srv := s.HTTP
	s.draining.Store(true)
	l.Close()
	// STOPPING=1 is advice for the supervisor's bookkeeping; failing to
	// deliver it must not turn a clean stop into an error.
	_ = notify("STOPPING=1")

	lameDuck := s.LameDuck
	if lameDuck == 0 {
		lameDuck = DefaultLameDuck
	}
	timeout := s.ShutdownTimeout
	if timeout == 0 {
		timeout = DefaultShutdownTimeout
	}
	hookCtx, cancelHooks := context.WithTimeout(context.Background(), max(lameDuck, 0)+timeout)
	defer cancelHooks()
	var hooks sync.WaitGroup
	for _, f := range s.OnShutdown {
		hooks.Go(func() { f(hookCtx) })
	}
	forced := func() error {
		cancelHooks()
		srv.Close()
		return ErrForced
	}

	if lameDuck > 0 {
		t := time.NewTimer(lameDuck)
		select {
		case <-t.C:
		case <-sigs:
			t.Stop()
			return forced()
		}
	}

	srv.SetKeepAlivesEnabled(false)
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(sctx) }()
	var err error
	select {
	case err = <-shut:
	case <-sigs:
		return forced()
	}
	// The drain closed the listener first; Shutdown closing it again (when
	// Serve had not yet noticed) is no failure.
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	if err != nil {
		srv.Close()
		cancelHooks()
		return fmt.Errorf("graceful: shutdown: %w", err)
	}
	hooksDone := make(chan struct{})
	go func() { hooks.Wait(); close(hooksDone) }()
	select {
	case <-hooksDone:
		return nil
	case <-hookCtx.Done():
		return fmt.Errorf("graceful: OnShutdown: %w", context.DeadlineExceeded)
	case <-sigs:
		return forced()
	}
}

// closeWhenDraining wraps h so that responses written during the drain say
// "Connection: close".
func (s *Server) closeWhenDraining(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.draining.Load() {
			setClose(w.Header())
			h.ServeHTTP(w, r)
			return
		}
		// The drain may start while this request runs: decide when the
		// header is written, not now.
		cw := &closeWriter{ResponseWriter: w, draining: &s.draining}
		h.ServeHTTP(cw, r)
		cw.decide()
	})
}

// logf logs the way srv's own errors are logged.
func logf(srv *http.Server, format string, args ...any) {
	if srv.ErrorLog != nil {
		srv.ErrorLog.Printf(format, args...)
		return
	}
	log.Printf(format, args...)
}

// unignored returns those of sigs the process does not ignore.
func unignored(sigs ...os.Signal) []os.Signal {
	var out []os.Signal
	for _, sig := range sigs {
		if !signal.Ignored(sig) {
			out = append(out, sig)
		}
	}
	return out
}
