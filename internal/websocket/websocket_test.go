package websocket

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// echoServer echoes every message and, after "bye", closes with 1001.
func echoServer(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := Accept(w, r)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			msg, err := c.Read()
			if err != nil {
				return
			}
			if string(msg) == "bye" {
				c.Close(CloseGoingAway, "restarting")
				continue // Read now waits for the client's answer
			}
			if err := c.Write(msg); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}

func TestEchoAndClose(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, echoServer(t)+"/ws")
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	// Lengths either side of the 7-, 16- and 64-bit length encodings.
	for _, n := range []int{0, 1, 125, 126, 65535, 65536, 300000} {
		msg := make([]byte, n)
		for i := range msg {
			msg[i] = byte(i % 251)
		}
		if err := c.Write(msg); err != nil {
			t.Fatalf("write %d bytes: %v", n, err)
		}
		got, err := c.Read()
		if err != nil {
			t.Fatalf("read %d bytes: %v", n, err)
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("echo of %d bytes came back as %d bytes", n, len(got))
		}
	}
	if err := c.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	_, err = c.Read()
	var ce *CloseError
	if !errors.As(err, &ce) || ce.Code != CloseGoingAway || ce.Reason != "restarting" {
		t.Fatalf("read after bye = %v, want a CloseError 1001 restarting", err)
	}
	if err := c.Write([]byte("late")); err == nil {
		t.Fatal("write after the close handshake succeeded")
	}
}

func TestLostConnectionIsNoCloseError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := Accept(w, r)
		if err != nil {
			return
		}
		c.CloseNow() // no close frame: a crash, as a client sees it
	}))
	defer srv.Close()
	c, err := Dial(context.Background(), "ws"+strings.TrimPrefix(srv.URL, "http"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	_, err = c.Read()
	var ce *CloseError
	if err == nil || errors.As(err, &ce) {
		t.Fatalf("read from a cut connection = %v, want an error that is no CloseError", err)
	}
}

func TestRefusesPlainRequests(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := Accept(w, r); err == nil {
			t.Error("Accept took a plain GET")
		}
	}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("plain GET got %s, want 400", resp.Status)
	}
	plain := httptest.NewServer(http.NotFoundHandler())
	defer plain.Close()
	if _, err := Dial(context.Background(), "ws"+strings.TrimPrefix(plain.URL, "http")); err == nil {
		t.Fatal("Dial succeeded against a server that refused the handshake")
	}
}
