package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"sync/atomic"
)

// attempt is one try at forwarding a request to one backend. The
// ReverseProxy's hooks find it in the upstream request's context; they run
// on the goroutine serving the request, so its fields need no lock.
type attempt struct {
	f         *flight
	in        *http.Request
	body      *body
	err       error // from the ErrorHandler
	retry     bool  // err allows trying another backend
	responded bool  // the backend's response headers arrived
}

type attemptKey struct{}

// ServeHTTP forwards r to a backend in rotation. A request that could not
// have reached the app — the connection was refused, or it is idempotent and
// failed before any response with its body unread — is tried again on
// another backend.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Let a backend read the rest of the request after it starts to answer,
	// as it could if it owned the port. HTTP/2 always can; the error only
	// says so.
	_ = http.NewResponseController(w).EnableFullDuplex()
	if p.closing.Load() {
		w.Header().Set("Connection", "close")
	}

	var bd *body
	if r.Body != nil && r.Body != http.NoBody {
		bd = &body{rc: r.Body}
		// bd's own Close does nothing, so that a retry can send it again;
		// the client's body must still be closed before this handler
		// returns. An app that answers without reading the body (gunicorn's
		// sync workers) leaves the Transport reading it on its own
		// goroutine; if that read ends after the handler, net/http starts
		// its background read of the connection then, and the next
		// request's read panics ("invalid concurrent Body.Read call",
		// golang/go#68560) and resets the client. Close waits for a read
		// in flight, and makes any later one fail.
		defer r.Body.Close()
	}
	var tried []*backend
	var last *attempt
	for {
		f, err := p.pick(r.Context(), tried)
		if err != nil {
			p.noBackend(w, r, last, err)
			return
		}
		a := p.forward(w, r, f, bd)
		if !a.retry {
			return
		}
		tried = append(tried, f.b)
		last = a
	}
}

func (p *Proxy) forward(w http.ResponseWriter, r *http.Request, f *flight, bd *body) *attempt {
	a := &attempt{f: f, in: r, body: bd}
	ctx, cancel := context.WithCancel(context.WithValue(r.Context(), attemptKey{}, a))
	f.cancel = cancel
	// Deferred, as ReverseProxy aborts a response cut off mid-body by
	// panicking with http.ErrAbortHandler.
	defer func() {
		cancel()
		f.end()
	}()
	out := r.WithContext(ctx)
	if bd != nil {
		out.Body = bd
		// Lets the Transport resend the request on a kept-alive connection
		// that failed before a byte was written, as long as no byte of the
		// body was read either.
		out.GetBody = bd.rewind
	}
	f.b.rp.ServeHTTP(w, out)
	return a
}

// noBackend answers a request that found no (other) backend to try.
func (p *Proxy) noBackend(w http.ResponseWriter, r *http.Request, last *attempt, err error) {
	switch {
	case r.Context().Err() != nil:
		// The client is gone; nobody reads the answer.
		w.WriteHeader(http.StatusBadGateway)
	case last != nil:
		p.errs.note(last.f.b.addr, evFailed, slog.LevelError, "upstream failed; no other backend to try", last.err,
			keyMethod, r.Method, keyPath, r.URL.Path)
		http.Error(w, http.StatusText(http.StatusBadGateway), http.StatusBadGateway)
	default:
		p.errs.note("", evNoBackend, slog.LevelWarn, "no backend", err, keyMethod, r.Method, keyPath, r.URL.Path)
		w.Header().Set("Retry-After", "1")
		http.Error(w, http.StatusText(http.StatusServiceUnavailable), http.StatusServiceUnavailable)
	}
}

// upstreamError is the ReverseProxy's ErrorHandler. When another backend
// may be tried it writes nothing, and ServeHTTP goes on to the next one.
func (p *Proxy) upstreamError(w http.ResponseWriter, out *http.Request, err error) {
	a := out.Context().Value(attemptKey{}).(*attempt)
	a.err = err
	b := a.f.b
	var de *dialError
	dial := errors.As(err, &de)
	if dial && !errors.Is(err, errClosed) {
		b.markDown()
	}
	clientGone := a.in.Context().Err() != nil
	a.retry = !clientGone && !a.responded && a.body.unread() && (dial || idempotent(a.in))
	switch {
	case a.retry:
		p.errs.note(b.addr, evRetried, slog.LevelWarn, "upstream failed; trying another backend", err, keyMethod, a.in.Method, keyPath, a.in.URL.Path)
		return
	case clientGone:
		b.log.Debug("client went away", keyMethod, a.in.Method, keyPath, a.in.URL.Path, keyErr, err)
	default:
		p.errs.note(b.addr, evFailed, slog.LevelError, "upstream failed", err, keyMethod, a.in.Method, keyPath, a.in.URL.Path)
	}
	http.Error(w, http.StatusText(http.StatusBadGateway), http.StatusBadGateway)
}

// modifyResponse is the ReverseProxy's ModifyResponse. It marks a switch
// of protocols (WebSocket) and an event stream as long-lived, so a drain
// waits for them only until UpgradedDrain, and follows a WebSocket's frames
// so that the proxy can close it cleanly when it must (see wsFrames).
func modifyResponse(res *http.Response) error {
	a := res.Request.Context().Value(attemptKey{}).(*attempt)
	a.responded = true
	if res.StatusCode == http.StatusSwitchingProtocols || eventStream(res.Header) {
		a.f.promote()
	}
	if rwc, ok := res.Body.(io.ReadWriteCloser); ok && isWebSocket(res) {
		res.Body = &wsFrames{ReadWriteCloser: rwc, retiring: a.f.b.retiring.Load}
	}
	return nil
}

func eventStream(h http.Header) bool {
	ct, _, _ := mime.ParseMediaType(h.Get("Content-Type"))
	return ct == "text/event-stream"
}

// idempotent reports whether a request may be sent again (RFC 9110 9.2.2).
func idempotent(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return r.Header.Get("Idempotency-Key") != "" || r.Header.Get("X-Idempotency-Key") != ""
}

// errBodyRead is why a request whose body has been partly sent cannot be
// sent again.
var errBodyRead = errors.New("proxy: request body already partly sent")

// body is the client's request body as each attempt sees it. Close does
// nothing, since the Transport closes the body when a dial fails and a
// retry needs it; the server closes the real one when the handler returns.
type body struct {
	rc   io.ReadCloser
	read atomic.Int64
}

func (b *body) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.read.Add(int64(n))
	return n, err
}

func (b *body) Close() error { return nil }

// unread reports whether no byte of the body has been taken, so the request
// can be sent again. A nil body is always unread.
func (b *body) unread() bool { return b == nil || b.read.Load() == 0 }

func (b *body) rewind() (io.ReadCloser, error) {
	if !b.unread() {
		return nil, errBodyRead
	}
	return b, nil
}
