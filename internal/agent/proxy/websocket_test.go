package proxy

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry/internal/websocket"
)

// wsBackend echoes WebSocket messages; "die" makes it drop the connection
// without a close frame, "bye" makes it close with 1001 itself.
func wsBackend(t *testing.T) *testBackend {
	return startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			msg, err := c.Read()
			if err != nil {
				return
			}
			switch string(msg) {
			case "die":
				return
			case "bye":
				c.Close(websocket.CloseGoingAway, "app says bye")
			default:
				c.Write(msg)
			}
		}
	})
}

func wsDial(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(url, "http")+"/ws")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	c.NetConn().SetDeadline(time.Now().Add(10 * time.Second))
	if err := c.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Read(); err != nil || string(got) != "hi" {
		t.Fatalf("echo through the proxy: %q, %v", got, err)
	}
	return c
}

// closeCode reads until the connection ends and returns the close code the
// client got, or fails when it ended without one.
func closeCode(t *testing.T, c *websocket.Conn) (int, string) {
	t.Helper()
	for {
		_, err := c.Read()
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code, ce.Reason
		}
		if err != nil {
			t.Fatalf("the WebSocket ended without a close frame: %v", err)
		}
	}
}

func TestWebSocketClosedCleanly(t *testing.T) {
	t.Run("drain bound passed", func(t *testing.T) {
		p, url := startProxy(t, Options{UpgradedDrain: 100 * time.Millisecond})
		b := wsBackend(t)
		p.Add(b.addr)
		c := wsDial(t, url)
		if err := p.Remove(context.Background(), b.addr); err != nil {
			t.Fatal(err)
		}
		if code, _ := closeCode(t, c); code != websocket.CloseServiceRestart {
			t.Fatalf("close code %d, want %d (service restart)", code, websocket.CloseServiceRestart)
		}
	})
	t.Run("app died in rotation", func(t *testing.T) {
		p, url := startProxy(t, Options{})
		b := wsBackend(t)
		p.Add(b.addr)
		c := wsDial(t, url)
		c.Write([]byte("die"))
		if code, _ := closeCode(t, c); code != websocket.CloseInternalError {
			t.Fatalf("close code %d, want %d (internal error)", code, websocket.CloseInternalError)
		}
	})
	t.Run("app closed it itself", func(t *testing.T) {
		p, url := startProxy(t, Options{})
		b := wsBackend(t)
		p.Add(b.addr)
		c := wsDial(t, url)
		// A large frame first, so the boundary tracking crosses reads.
		big := strings.Repeat("x", 200000)
		c.Write([]byte(big))
		if got, err := c.Read(); err != nil || len(got) != len(big) {
			t.Fatalf("large echo: %d bytes, %v", len(got), err)
		}
		c.Write([]byte("bye"))
		if code, reason := closeCode(t, c); code != websocket.CloseGoingAway || reason != "app says bye" {
			t.Fatalf("close %d %q, want the app's own 1001", code, reason)
		}
	})
}
