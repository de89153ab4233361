package listenfd

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// Exec is the shim, run as `ferry __listen-exec -- PROGRAM ARGS…` with argv
// the words after "--": it sets LISTEN_PID to its own pid, keeps LISTEN_FDS
// and LISTEN_FDNAMES, lets fds 3 … 3+LISTEN_FDS-1 survive exec, and execs
// argv[0], looked up in PATH. PROGRAM then runs with the shim's pid, the one
// the agent got from starting the shim.
//
// It returns only on error, before PROGRAM has started.
//
// PROGRAM must be the process that takes the sockets: if it is a shell that
// forks the app instead of exec'ing it (sh -c 'bin/app' may fork), the app's
// pid is not LISTEN_PID and a conforming app ignores the sockets.
func Exec(argv []string) error {
	if len(argv) == 0 {
		return errors.New("listenfd: no program to run")
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return fmt.Errorf("listenfd: %w", err)
	}
	n, err := fdCount()
	if err != nil {
		return err
	}
	for fd := firstFD; fd < firstFD+n; fd++ {
		// The fds arrive without FD_CLOEXEC from exec.Cmd, but nothing
		// promises that the shim's own start-up left them so.
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err != nil {
			return fmt.Errorf("listenfd: fd %d of %d passed: %w", fd, n, err)
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, flags&^unix.FD_CLOEXEC); err != nil {
			return fmt.Errorf("listenfd: fd %d: %w", fd, err)
		}
	}
	if err := os.Setenv(envPID, strconv.Itoa(os.Getpid())); err != nil {
		return fmt.Errorf("listenfd: %w", err)
	}
	err = syscall.Exec(path, argv, os.Environ())
	return fmt.Errorf("listenfd: exec %s: %w", path, err)
}

// fdCount is LISTEN_FDS: 0 when unset, an error when not a count.
func fdCount() (int, error) {
	s := os.Getenv(envFDs)
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("listenfd: %s=%q is not a count", envFDs, s)
	}
	return n, nil
}
