package proxy

import (
	"encoding/binary"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/ferrydeploy/ferry/internal/websocket"
)

// wsFrames wraps the app's side of an upgraded WebSocket connection and
// follows the frame boundaries of what the app sends. When that stream ends
// before the app sent a close frame — the drain's bound cut it, the agent
// is exiting, or the app died — and the stream stopped between two frames,
// Read hands the client one more frame: a close with 1012 (service
// restart) when the instance was being retired, else 1011. The client then
// sees a clean close that tells it to reconnect, instead of a cut
// connection it must treat as a failure.
type wsFrames struct {
	io.ReadWriteCloser
	retiring func() bool

	mu        sync.Mutex
	hdr       []byte // a frame header read so far, when incomplete
	remaining uint64 // payload bytes left in the current frame
	closeSeen bool   // the app sent a close frame
	pending   []byte // the synthetic close frame still to hand out
	err       error  // what ended the upstream stream
}

func isWebSocket(res *http.Response) bool {
	return res.StatusCode == http.StatusSwitchingProtocols && strings.EqualFold(res.Header.Get("Upgrade"), "websocket")
}

func (w *wsFrames) Read(p []byte) (int, error) {
	w.mu.Lock()
	if w.err != nil {
		defer w.mu.Unlock()
		return w.drainPending(p)
	}
	w.mu.Unlock()

	n, err := w.ReadWriteCloser.Read(p)

	w.mu.Lock()
	defer w.mu.Unlock()
	w.track(p[:n])
	if err == nil {
		return n, nil
	}
	w.err = err
	if !w.closeSeen && w.remaining == 0 && len(w.hdr) == 0 {
		code, reason := websocket.CloseInternalError, "upstream connection lost"
		if w.retiring() {
			code, reason = websocket.CloseServiceRestart, "service restart"
		}
		w.pending = append(binary.BigEndian.AppendUint16([]byte{0x88, byte(2 + len(reason))}, uint16(code)), reason...)
	}
	if n > 0 {
		return n, nil // the rest on the next Read
	}
	return w.drainPending(p)
}

// drainPending hands out the synthetic close frame, then the error.
func (w *wsFrames) drainPending(p []byte) (int, error) {
	if len(w.pending) > 0 {
		n := copy(p, w.pending)
		w.pending = w.pending[n:]
		return n, nil
	}
	return 0, w.err
}

// track advances the frame parser over b, which the app sent.
func (w *wsFrames) track(b []byte) {
	for len(b) > 0 {
		if w.remaining > 0 {
			k := min(uint64(len(b)), w.remaining)
			w.remaining -= k
			b = b[k:]
			continue
		}
		w.hdr = append(w.hdr, b[0])
		b = b[1:]
		need := 2
		if len(w.hdr) >= 2 {
			switch w.hdr[1] & 0x7F {
			case 126:
				need += 2
			case 127:
				need += 8
			}
			if w.hdr[1]&0x80 != 0 {
				need += 4 // masked, which a server should not do; follow it anyway
			}
		}
		if len(w.hdr) < need {
			continue
		}
		var size uint64
		switch l := w.hdr[1] & 0x7F; l {
		case 126:
			size = uint64(binary.BigEndian.Uint16(w.hdr[2:4]))
		case 127:
			size = binary.BigEndian.Uint64(w.hdr[2:10])
		default:
			size = uint64(l)
		}
		if w.hdr[0]&0x0F == 0x8 {
			w.closeSeen = true
		}
		w.remaining = size
		w.hdr = w.hdr[:0]
	}
}
