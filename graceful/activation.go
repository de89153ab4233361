package graceful

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
)

// The variables of systemd's socket-activation protocol (sd_listen_fds(3)),
// which ferry's agent also speaks when it hands a port over.
const (
	envListenPID     = "LISTEN_PID"
	envListenFDs     = "LISTEN_FDS"
	envListenFDNames = "LISTEN_FDNAMES"
)

// listenFDsStart is the first passed descriptor; 0–2 are stdio.
const listenFDsStart = 3

// maxListenFDs bounds LISTEN_FDS so that a garbled value cannot make us walk
// millions of descriptors. systemd itself refuses more than a few thousand.
const maxListenFDs = 4096

// activation is one socket passed in by a supervisor.
type activation struct {
	fd   int
	name string // from LISTEN_FDNAMES; "" when not given
}

// parseActivation reads the socket-activation variables through getenv for
// the process pid. It returns no sockets when the variables are absent or
// addressed to another process (LISTEN_PID differs): they were meant for a
// parent and leaked into our environment. A malformed value is an error
// rather than "no sockets", because silently binding our own port instead
// would run the app beside, not behind, its supervisor.
func parseActivation(getenv func(string) string, pid int) ([]activation, error) {
	pidStr, nStr := getenv(envListenPID), getenv(envListenFDs)
	if pidStr == "" || nStr == "" {
		return nil, nil
	}
	p, err := strconv.Atoi(pidStr)
	if err != nil || p <= 0 {
		return nil, fmt.Errorf("graceful: bad %s=%q", envListenPID, pidStr)
	}
	if p != pid {
		return nil, nil
	}
	n, err := strconv.Atoi(nStr)
	if err != nil || n < 0 || n > maxListenFDs {
		return nil, fmt.Errorf("graceful: bad %s=%q", envListenFDs, nStr)
	}
	if n == 0 {
		return nil, nil
	}
	var names []string
	if s := getenv(envListenFDNames); s != "" {
		names = strings.Split(s, ":")
		if len(names) != n {
			return nil, fmt.Errorf("graceful: %s names %d sockets, %s says %d", envListenFDNames, len(names), envListenFDs, n)
		}
	}
	socks := make([]activation, n)
	for i := range socks {
		socks[i].fd = listenFDsStart + i
		if names != nil {
			socks[i].name = names[i]
		}
	}
	return socks, nil
}

// inheritActivation takes over the sockets passed to this process. The
// variables are removed first, whether or not they were ours, so that a
// child we start is never told it owns sockets it does not have; and every
// passed descriptor is marked close-on-exec, including ones the app never
// uses, so that they do not leak into children either (os/exec relies on
// that flag, it does not close stray descriptors).
//
// Each usable socket becomes a net.Listener on a duplicate descriptor, and
// the original is closed. A descriptor that is not a listening socket (a
// datagram socket, a FIFO) is skipped, not an error: the app may take it by
// other means.
func inheritActivation() ([]inherited, error) {
	socks, err := parseActivation(os.Getenv, os.Getpid())
	for _, k := range []string{envListenPID, envListenFDs, envListenFDNames} {
		os.Unsetenv(k)
	}
	if err != nil || len(socks) == 0 || !canInherit {
		return nil, err
	}
	var out []inherited
	for _, s := range socks {
		closeOnExec(s.fd)
		if !isListening(s.fd) {
			continue
		}
		f := os.NewFile(uintptr(s.fd), s.name)
		l, err := net.FileListener(f)
		f.Close()
		if err != nil {
			for _, in := range out {
				in.l.Close()
			}
			return nil, fmt.Errorf("graceful: passed socket %d: %w", s.fd, err)
		}
		out = append(out, inherited{name: s.name, l: l})
	}
	return out, nil
}
