// Package websocket is the small part of RFC 6455 that the hello example and
// the zero-downtime benchmark need: the opening handshake on both sides,
// text and binary messages (fragments joined), ping/pong, and the closing
// handshake, whose status code tells a client whether the server went away
// on purpose (1001) or the connection was cut. Standard library only; no
// extensions, no subprotocols.
package websocket

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Close status codes used here (RFC 6455, 7.4.1).
const (
	CloseNormal         = 1000
	CloseGoingAway      = 1001 // the server is shutting down or restarting
	CloseInternalError  = 1011 // the server failed (a proxy: its backend died)
	CloseServiceRestart = 1012 // a proxy's backend is being replaced: reconnect
)

// MaxMessage bounds one message, fragments joined.
const MaxMessage = 1 << 20

const (
	opCont   = 0x0
	opText   = 0x1
	opBinary = 0x2
	opClose  = 0x8
	opPing   = 0x9
	opPong   = 0xA
)

// keyGUID is the constant every server appends to the client's key.
const keyGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// CloseError is what Read returns once the peer sent a close frame: the
// connection ended on purpose, with Code and Reason.
type CloseError struct {
	Code   int
	Reason string
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("websocket: closed by peer: %d %s", e.Code, e.Reason)
}

// Conn is one WebSocket connection. Read must be called from one goroutine;
// Write and Close are safe from any.
type Conn struct {
	nc     net.Conn
	br     *bufio.Reader
	client bool // a client masks what it sends

	wmu       sync.Mutex
	closeSent bool
}

// Accept answers r's opening handshake and takes over its connection.
// It fails, having written an HTTP error, when r is no WebSocket handshake.
func Accept(w http.ResponseWriter, r *http.Request) (*Conn, error) {
	key := r.Header.Get("Sec-WebSocket-Key")
	switch {
	case r.Method != http.MethodGet:
		http.Error(w, "websocket: the handshake must be a GET", http.StatusMethodNotAllowed)
		return nil, errors.New("websocket: handshake is not a GET")
	case !headerHas(r.Header, "Connection", "upgrade") || !headerHas(r.Header, "Upgrade", "websocket"):
		http.Error(w, "websocket: expected Connection: Upgrade and Upgrade: websocket", http.StatusBadRequest)
		return nil, errors.New("websocket: no upgrade requested")
	case r.Header.Get("Sec-WebSocket-Version") != "13":
		w.Header().Set("Sec-WebSocket-Version", "13")
		http.Error(w, "websocket: only version 13 is spoken", http.StatusUpgradeRequired)
		return nil, errors.New("websocket: unsupported version")
	case key == "":
		http.Error(w, "websocket: Sec-WebSocket-Key is missing", http.StatusBadRequest)
		return nil, errors.New("websocket: no key")
	}
	nc, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, "websocket: cannot take over this connection", http.StatusInternalServerError)
		return nil, fmt.Errorf("websocket: hijack: %w", err)
	}
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", acceptKey(key))
	if err := brw.Flush(); err != nil {
		nc.Close()
		return nil, fmt.Errorf("websocket: handshake: %w", err)
	}
	return &Conn{nc: nc, br: brw.Reader}, nil
}

// Dial opens a WebSocket to rawURL (ws://host/path; wss is not spoken).
func Dial(ctx context.Context, rawURL string) (*Conn, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("websocket: %w", err)
	}
	if u.Scheme != "ws" {
		return nil, fmt.Errorf("websocket: %q: only ws:// URLs are supported", rawURL)
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, fmt.Errorf("websocket: %w", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
		defer nc.SetDeadline(time.Time{})
	}
	var raw [16]byte
	rand.Read(raw[:])
	key := base64.StdEncoding.EncodeToString(raw[:])
	req := &http.Request{Method: http.MethodGet, URL: u, Host: u.Host, Header: http.Header{
		"Upgrade":               {"websocket"},
		"Connection":            {"Upgrade"},
		"Sec-Websocket-Key":     {key},
		"Sec-Websocket-Version": {"13"},
	}}
	if err := req.Write(nc); err != nil {
		nc.Close()
		return nil, fmt.Errorf("websocket: handshake: %w", err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("websocket: handshake: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") != acceptKey(key) {
		resp.Body.Close()
		nc.Close()
		return nil, fmt.Errorf("websocket: handshake refused: %s", resp.Status)
	}
	return &Conn{nc: nc, br: br, client: true}, nil
}

// Read returns the next text or binary message, answering pings on the
// way. When the peer closes, Read answers its close frame (unless Close
// was called first) and returns a *CloseError; any other error means the
// connection was lost.
func (c *Conn) Read() ([]byte, error) {
	var msg []byte
	for {
		fin, op, payload, err := c.readFrame()
		if err != nil {
			return nil, err
		}
		switch op {
		case opPing:
			if err := c.writeFrame(opPong, payload); err != nil {
				return nil, err
			}
		case opPong:
		case opClose:
			ce := &CloseError{Code: 1005}
			if len(payload) >= 2 {
				ce.Code = int(binary.BigEndian.Uint16(payload))
				ce.Reason = string(payload[2:])
			}
			c.Close(ce.Code, "")
			return nil, ce
		case opText, opBinary, opCont:
			if len(msg)+len(payload) > MaxMessage {
				c.Close(1009, "message too big")
				return nil, fmt.Errorf("websocket: message over %d bytes", MaxMessage)
			}
			msg = append(msg, payload...)
			if fin {
				return msg, nil
			}
		default:
			c.Close(1002, "unknown opcode")
			return nil, fmt.Errorf("websocket: unknown opcode %#x", op)
		}
	}
}

// Write sends p as one text message.
func (c *Conn) Write(p []byte) error { return c.writeFrame(opText, p) }

// Close sends a close frame with code and reason, once; the peer's answer
// arrives through Read. It does not close the connection: CloseNow does.
func (c *Conn) Close(code int, reason string) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closeSent {
		return nil
	}
	c.closeSent = true
	p := binary.BigEndian.AppendUint16(nil, uint16(code))
	return c.writeLocked(opClose, append(p, reason...))
}

// CloseNow closes the underlying connection.
func (c *Conn) CloseNow() error { return c.nc.Close() }

// NetConn is the underlying connection, for deadlines.
func (c *Conn) NetConn() net.Conn { return c.nc }

func (c *Conn) writeFrame(op byte, p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closeSent {
		return errors.New("websocket: write after close")
	}
	return c.writeLocked(op, p)
}

func (c *Conn) writeLocked(op byte, p []byte) error {
	hdr := []byte{0x80 | op, 0}
	switch n := len(p); {
	case n < 126:
		hdr[1] = byte(n)
	case n <= 0xFFFF:
		hdr[1] = 126
		hdr = binary.BigEndian.AppendUint16(hdr, uint16(n))
	default:
		hdr[1] = 127
		hdr = binary.BigEndian.AppendUint64(hdr, uint64(n))
	}
	body := p
	if c.client {
		hdr[1] |= 0x80
		var mask [4]byte
		rand.Read(mask[:])
		hdr = append(hdr, mask[:]...)
		body = make([]byte, len(p))
		for i := range p {
			body[i] = p[i] ^ mask[i%4]
		}
	}
	if _, err := c.nc.Write(append(hdr, body...)); err != nil {
		return fmt.Errorf("websocket: write: %w", err)
	}
	return nil
}

func (c *Conn) readFrame() (fin bool, op byte, payload []byte, err error) {
	var h [2]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return false, 0, nil, fmt.Errorf("websocket: read: %w", err)
	}
	fin, op = h[0]&0x80 != 0, h[0]&0x0F
	masked := h[1]&0x80 != 0
	if masked == c.client {
		// Clients mask, servers do not (RFC 6455, 5.1).
		return false, 0, nil, errors.New("websocket: frame masked the wrong way")
	}
	n := uint64(h[1] & 0x7F)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(c.br, b[:]); err != nil {
			return false, 0, nil, fmt.Errorf("websocket: read: %w", err)
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(c.br, b[:]); err != nil {
			return false, 0, nil, fmt.Errorf("websocket: read: %w", err)
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	if n > MaxMessage {
		return false, 0, nil, fmt.Errorf("websocket: frame of %d bytes is over %d", n, MaxMessage)
	}
	var mask [4]byte
	if masked {
		if _, err := io.ReadFull(c.br, mask[:]); err != nil {
			return false, 0, nil, fmt.Errorf("websocket: read: %w", err)
		}
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(c.br, payload); err != nil {
		return false, 0, nil, fmt.Errorf("websocket: read: %w", err)
	}
	if masked {
		for i := range payload {
			payload[i] ^= mask[i%4]
		}
	}
	return fin, op, payload, nil
}

func acceptKey(key string) string {
	sum := sha1.Sum([]byte(key + keyGUID))
	return base64.StdEncoding.EncodeToString(sum[:])
}

// headerHas reports whether a comma-separated header lists token.
func headerHas(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, f := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), token) {
				return true
			}
		}
	}
	return false
}
