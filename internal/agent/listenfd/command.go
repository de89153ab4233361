// Package listenfd hands listening sockets to a child process in systemd's
// socket-activation format (LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID; fds from
// 3 on), and takes them back up in a Go program.
//
// The agent binds an app's public port once and passes the same socket to
// every instance it starts; an upgrade then never closes the socket, so its
// accept queue, and every connection waiting in it, survives the swap.
//
// LISTEN_PID must be the receiving process's own pid, which os/exec cannot
// know before the fork. So a child starts as `ferry __listen-exec -- PROGRAM
// ARGS…` (Command builds that), and the shim (Exec) sets LISTEN_PID to its own
// pid and execs PROGRAM, which keeps both the pid and the fds.
package listenfd

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// ShimCommand is the hidden subcommand of the ferry binary that runs Exec
// with the arguments after "--".
const ShimCommand = "__listen-exec"

// The variables of systemd's protocol; see sd_listen_fds(3).
const (
	envPID   = "LISTEN_PID"
	envFDs   = "LISTEN_FDS"
	envNames = "LISTEN_FDNAMES"

	firstFD = 3 // SD_LISTEN_FDS_START

	// unknownName is what sd_listen_fds_with_names reports for a socket
	// that was given no name.
	unknownName = "unknown"
)

// File returns a duplicate of ln's socket (a *net.TCPListener or
// *net.UnixListener) as a file to pass to another process, whose Fd does
// not change the socket's blocking mode. The mode belongs to the socket,
// not to one descriptor of it, and the socket is shared: with the agent's
// proxy process, and with the instances that accept on it. The file of
// net's own File method turns the socket blocking when os/exec takes its
// Fd, and then an accept already waiting in any of those processes blocks
// in the kernel, where closing the listener cannot wake it. So the socket
// stays non-blocking, as systemd passes it with NonBlocking=yes: the app
// sets the mode it wants, as Go's net.FileListener, gunicorn, Node and
// nginx do.
func File(ln net.Listener) (*os.File, error) {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("listenfd: a %T has no file to pass", ln)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("listenfd: %w", err)
	}
	dup, derr := -1, error(nil)
	if err := rc.Control(func(fd uintptr) {
		dup, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, fmt.Errorf("listenfd: %w", err)
	}
	if derr != nil {
		return nil, fmt.Errorf("listenfd: dup: %w", derr)
	}
	// os.NewFile of a descriptor that is already non-blocking leaves it so
	// when its Fd is taken (unlike the file of net's File).
	return os.NewFile(uintptr(dup), "socket"), nil
}

// Command returns what starts argv through the shim at self (the ferry
// binary) with listeners passed as fds 3, 4, …, named by names in
// LISTEN_FDNAMES ("unknown" each when names is nil).
//
// files are the listeners' dups, for exec.Cmd.ExtraFiles in this order; the
// caller closes them once the child has started, and keeps the listeners
// open for the next child. env goes after the rest of the child's
// environment: exec.Cmd keeps the last of a repeated variable, so it
// overrides any LISTEN_* the agent itself inherited. The shim sets
// LISTEN_PID.
func Command(self string, argv []string, listeners []net.Listener, names []string) (shimArgv []string, env []string, files []*os.File, err error) {
	if len(argv) == 0 {
		return nil, nil, nil, errors.New("listenfd: no program to run")
	}
	if names == nil {
		names = make([]string, len(listeners))
		for i := range names {
			names[i] = unknownName
		}
	}
	if len(names) != len(listeners) {
		return nil, nil, nil, fmt.Errorf("listenfd: %d names for %d listeners", len(names), len(listeners))
	}
	for _, name := range names {
		if err := checkName(name); err != nil {
			return nil, nil, nil, err
		}
	}

	files = make([]*os.File, 0, len(listeners))
	for i, ln := range listeners {
		f, err := File(ln)
		if err != nil {
			closeAll(files)
			return nil, nil, nil, fmt.Errorf("listenfd: %s: %w", names[i], err)
		}
		files = append(files, f)
	}

	shimArgv = append([]string{self, ShimCommand, "--"}, argv...)
	env = []string{
		envFDs + "=" + strconv.Itoa(len(listeners)),
		envNames + "=" + strings.Join(names, ":"),
	}
	return shimArgv, env, files, nil
}

// checkName applies systemd's rule for FileDescriptorName=: up to 255
// printable ASCII characters, no colon (the separator).
func checkName(name string) error {
	if name == "" || len(name) > 255 {
		return fmt.Errorf("listenfd: name %q: must be 1 to 255 characters", name)
	}
	for _, r := range name {
		if r <= ' ' || r > '~' || r == ':' {
			return fmt.Errorf("listenfd: name %q: only printable ASCII without space or colon", name)
		}
	}
	return nil
}

func closeAll(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}
