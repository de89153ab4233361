package cli

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/ferrydeploy/ferry/internal/agent/listenfd"
	"github.com/ferrydeploy/ferry/internal/agent/runas"
)

// newListenExec is the shim handoff-mode instances start through: it sets
// LISTEN_PID to its own pid and execs the app, which keeps that pid and the
// listening sockets on fds 3, 4, …. Not for people: hidden.
func newListenExec(env Env) *cobra.Command {
	return &cobra.Command{
		Use:                "__listen-exec -- PROGRAM [ARGS...]",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, a []string) error {
			if len(a) > 0 && a[0] == "--" {
				a = a[1:]
			}
			if len(a) == 0 {
				return usageError{errNoProgram}
			}
			return listenfd.Exec(a)
		},
	}
}

var errNoProgram = errors.New("__listen-exec: no program to run after --")

// newRunAsExec is the shim processes with user: or limits: start through
// (package runas): it sets the limits, drops to the user and execs the
// app, keeping its pid. Not for people: hidden.
func newRunAsExec(env Env) *cobra.Command {
	return &cobra.Command{
		Use:                runas.ShimCommand + " [--uid N --gid N --groups G,…] [--nofile N] [--nproc N] -- PROGRAM [ARGS...]",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, a []string) error {
			return runas.Exec(a)
		},
	}
}
