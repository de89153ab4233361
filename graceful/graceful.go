// Package graceful serves a Go app's HTTP with zero downtime under ferry's
// agent, systemd, or by hand.
//
// An upgrade starts the new instance, waits until it is ready, then stops the
// old one. Requests get lost at both ends of that: when the new instance
// claims readiness before it accepts, and when the old one drops what it was
// doing, or closes a keep-alive connection the instant a client reuses it.
// graceful closes both gaps for the app:
//
//   - Listen takes the socket the supervisor passes in the systemd format, so
//     old and new share one accept queue, else $PORT, else binds with
//     SO_REUSEPORT so two copies run by hand can overlap.
//   - Serve sends READY=1 to $NOTIFY_SOCKET once it serves, and on SIGTERM
//     sends STOPPING=1 and drains: see Server.
//
// It imports only the standard library, so any app can use it, and it never
// re-executes the app: that would change the pid its supervisor watches.
//
// The common case:
//
//	if err := graceful.ListenAndServe(":8080", mux); err != nil {
//		log.Fatal(err)
//	}
//
// ListenAndServe returns nil after a clean shutdown, so the app exits 0.
package graceful

import (
	"context"
	"net/http"
	"time"
)

// ListenAndServe serves h on Listen(addr) with the defaults of Server, and
// returns nil after a clean shutdown on SIGTERM or SIGINT. The http.Server
// it builds bounds the time to read request headers, against clients that
// hold connections open by sending them slowly.
func ListenAndServe(addr string, h http.Handler) error {
	return Serve(&http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 10 * time.Second})
}

// Serve serves srv on Listen(srv.Addr) with the defaults of Server; see
// ListenAndServe. Register hooks for hijacked connections with
// srv.RegisterOnShutdown, or use Server.OnShutdown to have them waited for.
func Serve(srv *http.Server) error {
	return (&Server{HTTP: srv}).ListenAndServe(context.Background())
}
