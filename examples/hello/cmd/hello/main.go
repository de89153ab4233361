// Command hello is ferry's example app: an HTTP server that says which
// release answered, with a health check at /healthz. It serves through the
// graceful package, so upgrades lose no requests.
//
// Besides GET /, it answers POST / with the length of the body it read, and
// /slow?ms=N after N milliseconds: the zero-downtime benchmark uses them for
// requests that are not idempotent and requests that outlast an upgrade.
// /ws is a WebSocket that answers each message with "<release> <message>";
// when hello shuts down it closes them with 1001 (going away), so a client
// knows to reconnect rather than seeing its connection cut.
//
// Three variables make it a bad release on purpose, for tests and the
// benchmark: HELLO_CRASH=1 exits 1 at boot; HELLO_NOT_READY=1 listens but
// never becomes ready (no READY=1, /healthz answers 503); HELLO_IGNORE_TERM=1
// ignores SIGTERM, so only SIGKILL stops it.
package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/ferrydeploy/ferry/graceful"
)

func main() {
	if os.Getenv("HELLO_CRASH") == "1" {
		fmt.Fprintln(os.Stderr, "hello: crashing at boot as HELLO_CRASH=1 asks")
		os.Exit(1)
	}
	if os.Getenv("HELLO_IGNORE_TERM") == "1" {
		// graceful leaves ignored signals alone, so SIGTERM stays ignored.
		signal.Ignore(syscall.SIGTERM)
	}
	release := os.Getenv("FERRY_RELEASE")
	if release == "" {
		release = "dev"
	}
	notReady := os.Getenv("HELLO_NOT_READY") == "1"

	sockets := newWebSockets(release)
	srv := &graceful.Server{
		HTTP: &http.Server{
			Handler:           handler(release, notReady, sockets),
			ReadHeaderTimeout: 10 * time.Second,
		},
		OnShutdown: []func(context.Context){sockets.shutdown},
	}
	if notReady {
		srv.Ready = make(chan struct{}) // never closed
	}
	// graceful prefers a passed socket, then $PORT, over this address.
	l, err := graceful.Listen(":8080")
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("hello %s listening on %s", release, l.Addr())
	if err := srv.Serve(context.Background(), l); err != nil {
		log.Fatal(err)
	}
}

func handler(release string, notReady bool, sockets *webSockets) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/ws", sockets)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if notReady {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		ms, err := strconv.Atoi(r.URL.Query().Get("ms"))
		if err != nil || ms < 0 {
			http.Error(w, "ms must be a whole number of milliseconds", http.StatusBadRequest)
			return
		}
		t := time.NewTimer(time.Duration(ms) * time.Millisecond)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return // the client left; nobody to answer
		}
		w.Header().Set("X-Release", release)
		fmt.Fprintf(w, "hello from %s after %d ms\n", release, ms)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Release", release)
		if r.Method != http.MethodPost {
			fmt.Fprintf(w, "hello from %s\n", release)
			return
		}
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "hello from %s, read %d bytes\n", release, n)
	})
	return mux
}
