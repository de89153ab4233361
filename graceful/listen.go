package graceful

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
)

// inherited is a listening socket passed in by the supervisor.
type inherited struct {
	name  string // from LISTEN_FDNAMES; "" when not given
	l     net.Listener
	taken bool
}

// passed holds the process's passed sockets. They are read once, on the
// first Listen, because reading them consumes the environment variables.
var passed struct {
	once  sync.Once
	mu    sync.Mutex
	socks []inherited
	err   error
}

// Listen returns the listener the app should serve addr on. In order:
//
//  1. A socket passed by the supervisor in the systemd format (LISTEN_PID,
//     LISTEN_FDS, LISTEN_FDNAMES): the one named addr, else the one bound to
//     addr's port, else the first not yet taken. Each is handed out once.
//     The supervisor keeps its own copy, so the socket and its accept queue
//     outlive this process: closing our listener stops us accepting without
//     refusing anyone.
//  2. $PORT, when set: addr's host (all interfaces when it has none) on that
//     port. Without SO_REUSEPORT, since the supervisor picked that port for
//     this instance alone, and sharing it by accident would send another
//     app's traffic here.
//  3. addr itself, with SO_REUSEPORT, so that a new copy run by hand can
//     start while the old one still serves.
//
// The listener is TCP unless a Unix socket was passed.
func Listen(addr string) (net.Listener, error) {
	if l, err := takePassed(addr); l != nil || err != nil {
		if l != nil {
			passedListeners.Store(l, true)
		}
		return l, err
	}
	if port := os.Getenv("PORT"); port != "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			host = ""
		}
		l, err := net.Listen("tcp", net.JoinHostPort(host, port))
		if err != nil {
			return nil, fmt.Errorf("graceful: listen on $PORT: %w", err)
		}
		return l, nil
	}
	lc := net.ListenConfig{Control: reusePort}
	l, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("graceful: %w", err)
	}
	return l, nil
}

// takePassed hands out the passed socket that fits addr best, or nil when
// none is left.
func takePassed(addr string) (net.Listener, error) {
	passed.once.Do(func() {
		passed.socks, passed.err = inheritActivation()
	})
	passed.mu.Lock()
	defer passed.mu.Unlock()
	if passed.err != nil {
		return nil, passed.err
	}
	i := pickPassed(passed.socks, addr)
	if i < 0 {
		return nil, nil
	}
	passed.socks[i].taken = true
	return passed.socks[i].l, nil
}

// pickPassed returns the index of the untaken socket that fits addr: by
// name, then by port, then the first; -1 when all are taken. Falling back to
// any socket lets an app that hard-codes ":8080" run behind a supervisor
// that chose another port.
func pickPassed(socks []inherited, addr string) int {
	byPort, first := -1, -1
	_, port, _ := net.SplitHostPort(addr)
	for i, s := range socks {
		if s.taken {
			continue
		}
		if s.name != "" && s.name == addr {
			return i
		}
		if first < 0 {
			first = i
		}
		if byPort < 0 && port != "" && portOf(s.l.Addr()) == port {
			byPort = i
		}
	}
	if byPort >= 0 {
		return byPort
	}
	return first
}

func portOf(a net.Addr) string {
	if t, ok := a.(*net.TCPAddr); ok {
		return strconv.Itoa(t.Port)
	}
	return ""
}

// passedListeners are the sockets a supervisor passed in. They may be shared
// with another copy of the app that still serves, so Serve does not accept
// on one before the app is Ready: a copy that is warming up, or never gets
// ready, must not take that copy's connections.
var passedListeners sync.Map
