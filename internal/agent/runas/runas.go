// Package runas starts an app's process as its own user with its resource
// limits: a tiny re-exec of ferry (`ferry __exec`), which, still as the
// agent's user, sets the limits on itself, drops to the process's user and
// groups, and execs the command. The limits are so in place before the app
// runs, and its pid is the one the agent started. (os/exec cannot set a
// child's limits between fork and exec, prlimit on another user's process
// needs CAP_SYS_RESOURCE, and a shell's ulimit spells the process limit -u
// in bash, -p in dash.)
package runas

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/ferrydeploy/ferry"
)

// ShimCommand is the hidden ferry command Prefix starts.
const ShimCommand = "__exec"

// Prefix is what goes before a process's command line so that it runs as
// cred (nil: the agent's user) with limits, through self (the ferry
// binary); nil when there is nothing to do.
func Prefix(self string, cred *syscall.Credential, limits ferry.Limits) []string {
	if cred == nil && limits == (ferry.Limits{}) {
		return nil
	}
	out := []string{self, ShimCommand}
	if cred != nil {
		out = append(out, "--uid", strconv.FormatUint(uint64(cred.Uid), 10), "--gid", strconv.FormatUint(uint64(cred.Gid), 10))
		if len(cred.Groups) > 0 {
			gs := make([]string, len(cred.Groups))
			for i, g := range cred.Groups {
				gs[i] = strconv.FormatUint(uint64(g), 10)
			}
			out = append(out, "--groups", strings.Join(gs, ","))
		}
	}
	if limits.NoFile > 0 {
		out = append(out, "--nofile", strconv.Itoa(limits.NoFile))
	}
	if limits.NProc > 0 {
		out = append(out, "--nproc", strconv.Itoa(limits.NProc))
	}
	return append(out, "--")
}

// Exec is the shim: args are Prefix's flags, "--", and the command. It
// returns only on error, before the command has started.
func Exec(args []string) error {
	var uid, gid, nofile, nproc = -1, -1, 0, 0
	var groups []int
	for len(args) > 0 && args[0] != "--" {
		if len(args) < 2 {
			return fmt.Errorf("%s: %s needs a value", ShimCommand, args[0])
		}
		flag, v := args[0], args[1]
		args = args[2:]
		n, err := strconv.Atoi(v)
		if flag == "--groups" {
			for _, g := range strings.Split(v, ",") {
				id, err := strconv.Atoi(g)
				if err != nil {
					return fmt.Errorf("%s: --groups %q", ShimCommand, v)
				}
				groups = append(groups, id)
			}
			continue
		}
		if err != nil || n < 0 {
			return fmt.Errorf("%s: %s %q is not a number", ShimCommand, flag, v)
		}
		switch flag {
		case "--uid":
			uid = n
		case "--gid":
			gid = n
		case "--nofile":
			nofile = n
		case "--nproc":
			nproc = n
		default:
			return fmt.Errorf("%s: unknown flag %s", ShimCommand, flag)
		}
	}
	if len(args) < 2 {
		return errors.New(ShimCommand + ": no command after --")
	}
	argv := args[1:]
	for _, l := range []struct {
		resource, value int
		name            string
	}{{unix.RLIMIT_NOFILE, nofile, "nofile"}, {unix.RLIMIT_NPROC, nproc, "nproc"}} {
		if l.value == 0 {
			continue
		}
		lim := unix.Rlimit{Cur: uint64(l.value), Max: uint64(l.value)}
		if err := unix.Setrlimit(l.resource, &lim); err != nil {
			return fmt.Errorf("limits: %s %d: %w (above the agent's own hard limit needs a root agent)", l.name, l.value, err)
		}
	}
	if uid >= 0 {
		// Groups and group first: after Setuid there is no right left to
		// change them.
		if err := syscall.Setgroups(groups); err != nil {
			return fmt.Errorf("user: groups: %w", err)
		}
		if err := syscall.Setgid(gid); err != nil {
			return fmt.Errorf("user: gid %d: %w", gid, err)
		}
		if err := syscall.Setuid(uid); err != nil {
			return fmt.Errorf("user: uid %d: %w", uid, err)
		}
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return fmt.Errorf("%s: %w", ShimCommand, err)
	}
	err = syscall.Exec(path, argv, os.Environ())
	return fmt.Errorf("%s: exec %s: %w", ShimCommand, path, err)
}
