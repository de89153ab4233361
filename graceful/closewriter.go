package graceful

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"sync/atomic"
)

// closeWriter adds "Connection: close" to a response whose header is written
// after the drain started, so that a request which began before the signal
// still tells its client not to reuse the connection. net/http then closes
// the connection after the response (HTTP/1) or sends a GOAWAY (HTTP/2).
//
// It passes Flush, Hijack and ReadFrom through and unwraps for
// http.ResponseController, so handlers keep streaming, hijacking and
// sendfile.
type closeWriter struct {
	http.ResponseWriter
	draining *atomic.Bool
	decided  bool
}

// decide settles the Connection header just before the header is written.
func (w *closeWriter) decide() {
	if w.decided {
		return
	}
	w.decided = true
	if w.draining.Load() {
		setClose(w.Header())
	}
}

func (w *closeWriter) WriteHeader(code int) {
	// 1xx responses go out ahead of the real header, which is still to be
	// decided; a 101 switches protocols and must keep its own Connection.
	if code >= 200 {
		w.decide()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *closeWriter) Write(p []byte) (int, error) {
	w.decide()
	return w.ResponseWriter.Write(p)
}

func (w *closeWriter) ReadFrom(r io.Reader) (int64, error) {
	w.decide()
	return io.Copy(w.ResponseWriter, r)
}

func (w *closeWriter) Flush() {
	w.decide()
	http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *closeWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	// A hijacked connection has no more HTTP responses to mark.
	w.decided = true
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

func (w *closeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// setClose asks for the connection to be closed after this response, unless
// the handler already chose a Connection header (an upgrade, say).
func setClose(h http.Header) {
	if h.Get("Connection") == "" {
		h.Set("Connection", "close")
	}
}
