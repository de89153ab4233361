package main

import (
	"context"
	"net/http"
	"sync"

	"github.com/ferrydeploy/ferry/internal/websocket"
)

// webSockets serves /ws and knows the open connections, which http.Server
// stops tracking once they are hijacked, so that shutdown can close them.
type webSockets struct {
	release string
	mu      sync.Mutex
	open    map[*websocket.Conn]struct{}
	closing bool
	done    chan struct{} // closed when closing and the last one ended
}

func newWebSockets(release string) *webSockets {
	return &webSockets{release: release, open: map[*websocket.Conn]struct{}{}, done: make(chan struct{})}
}

func (ws *webSockets) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r)
	if err != nil {
		return // Accept answered with the reason
	}
	ws.mu.Lock()
	if ws.closing {
		ws.mu.Unlock()
		c.Close(websocket.CloseGoingAway, "shutting down")
		c.CloseNow()
		return
	}
	ws.open[c] = struct{}{}
	ws.mu.Unlock()
	defer ws.forget(c)
	for {
		msg, err := c.Read()
		if err != nil {
			return // closed by either side, or lost
		}
		// After a shutdown's close frame the write fails; keep reading
		// until the client answers it, so that closing the connection
		// never discards unread input (which would send a reset).
		c.Write(append([]byte(ws.release+" "), msg...))
	}
}

func (ws *webSockets) forget(c *websocket.Conn) {
	c.CloseNow()
	ws.mu.Lock()
	defer ws.mu.Unlock()
	delete(ws.open, c)
	if ws.closing && len(ws.open) == 0 {
		close(ws.done)
	}
}

// shutdown is a graceful.Server OnShutdown hook: it sends every open
// WebSocket a 1001 close frame and waits for the clients' answers, cutting
// the connections left when ctx ends.
func (ws *webSockets) shutdown(ctx context.Context) {
	ws.mu.Lock()
	ws.closing = true
	if len(ws.open) == 0 {
		close(ws.done)
	}
	for c := range ws.open {
		c.Close(websocket.CloseGoingAway, "shutting down")
	}
	ws.mu.Unlock()
	select {
	case <-ws.done:
	case <-ctx.Done():
		ws.mu.Lock()
		for c := range ws.open {
			c.CloseNow()
		}
		ws.mu.Unlock()
	}
}
