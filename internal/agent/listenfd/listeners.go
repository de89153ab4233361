package listenfd

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Listeners returns the listening sockets this process was started with,
// and their names, when LISTEN_PID is this process's pid — whether they came
// from the agent's shim or from systemd. It returns none, and no error, when
// nothing was passed or it was passed to another process (an ancestor that
// did not unset the variables).
//
// Either way it unsets LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES and marks
// the fds close-on-exec, so this process's own children do not take them for
// theirs; call it once. Only stream sockets are taken.
func Listeners() ([]net.Listener, []string, error) {
	pidVar := os.Getenv(envPID)
	n, countErr := fdCount()
	namesVar, named := os.LookupEnv(envNames)
	os.Unsetenv(envPID)
	os.Unsetenv(envFDs)
	os.Unsetenv(envNames)

	if pid, err := strconv.Atoi(pidVar); err != nil || pid != os.Getpid() {
		return nil, nil, nil
	}
	if countErr != nil {
		return nil, nil, countErr
	}
	if n == 0 {
		return nil, nil, nil
	}
	names := make([]string, n)
	if named {
		got := strings.Split(namesVar, ":")
		if len(got) != n {
			return nil, nil, fmt.Errorf("listenfd: %s has %d names for %d fds", envNames, len(got), n)
		}
		copy(names, got)
	} else {
		for i := range names {
			names[i] = unknownName
		}
	}

	listeners := make([]net.Listener, 0, n)
	for i := range n {
		fd := firstFD + i
		unix.CloseOnExec(fd)
		f := os.NewFile(uintptr(fd), names[i])
		ln, err := net.FileListener(f) // a dup: f is closed either way
		f.Close()
		if err != nil {
			for _, ln := range listeners {
				ln.Close()
			}
			for rest := fd + 1; rest < firstFD+n; rest++ {
				unix.Close(rest)
			}
			return nil, nil, fmt.Errorf("listenfd: fd %d (%s): %w", fd, names[i], err)
		}
		listeners = append(listeners, ln)
	}
	return listeners, names, nil
}
