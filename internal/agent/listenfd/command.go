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

// fileListener is what a listener must be to be passed on:
// *net.TCPListener and *net.UnixListener are.
type fileListener interface {
	File() (*os.File, error)
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
		fl, ok := ln.(fileListener)
		if !ok {
			closeAll(files)
			return nil, nil, nil, fmt.Errorf("listenfd: %s: a %T has no file to pass", names[i], ln)
		}
		f, err := fl.File()
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
