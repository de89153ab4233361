// Package cli is ferry's command line: one file per command, flags and
// config types here, and the one place where errors become exit codes.
package cli

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

// Env is what a command may touch of the outside world, so tests can run
// commands in-process.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
}

// Version is set at link time: -ldflags "-X github.com/ferrydeploy/ferry/internal/cli.Version=…".
var Version = "dev"

// Run runs ferry with args and returns the process exit code.
func Run(ctx context.Context, args []string, env Env) int {
	root := newRoot(env)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	code := ExitCode(ctx, err)
	if err != nil && code != ExitInterrupted {
		fmt.Fprintf(env.Stderr, "ferry: %v\n", err)
		if code == ExitUsage {
			fmt.Fprintln(env.Stderr, "Run 'ferry --help' or 'ferry COMMAND --help' for usage.")
		}
	} else if code == ExitInterrupted {
		fmt.Fprintln(env.Stderr, "ferry: interrupted")
	}
	return code
}

// Main is cmd/ferry's whole job after signal handling.
func Main(ctx context.Context) int {
	return Run(ctx, os.Args[1:], Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr})
}

func newRoot(env Env) *cobra.Command {
	root := &cobra.Command{
		Use:   "ferry",
		Short: "ferry ships applications to servers",
		Long: `ferry ships applications to servers. It builds an app into an immutable,
checksummed artifact; a control server keeps the artifacts, the app's
config and secrets, and rolls releases (artifact + config) out to groups of
hosts in health-gated batches, rolling back on its own; an agent on each
host installs releases atomically, runs and supervises the app's processes,
owns their ports and upgrades them without dropping a request. An app says
how in its ferry.yaml: ferry init writes one, docs/ferry-yaml.md lists
every key. Without a server, ferry apply, run and export work on one host.

Commands, by what they are for (ferry COMMAND --help for each):
  ship     build, publish, deploy, promote, rollback
  servers  server (API, web UI, rollouts), agent (install, join-token,
           status, logs, upgrade), login, dev (all of it on this machine)
  operate  status, releases, history, logs, lock, host, gc
  config   config (values and secrets per group), token, keygen, sign
  local    init (a ferry.yaml), run (foreman-style), apply (stretcher
           manifests), export (systemd, supervisord, launchd units)`,
		Version:       Version,
		SilenceErrors: true,
		SilenceUsage:  true,
		// An unknown command is a usage error (exit 2), told by its type:
		// cobra checks Args only on a command that runs.
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	root.SetIn(env.Stdin)
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newInit(env), newBuild(env), newApply(env), newAgent(env), newRun(env), newExport(env), newListenExec(env), newRunAsExec(env), newProxyExec(env), newServer(env), newDev(env),
		newLogin(env), newPublish(env), newDeploy(env), newRollback(env), newPromote(env), newStatus(env), newReleases(env), newHistory(env), newConfig(env), newKeygen(env), newSign(env), newToken(env), newLock(env), newGC(env), newLogs(env), newHost(env))
	return root
}

// usageError marks an error in how ferry was called (exit 2).
type usageError struct{ error }

func (u usageError) Unwrap() error { return u.error }

// args wraps a cobra argument check so its failure is a usage error.
func args(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, a []string) error {
		if err := check(cmd, a); err != nil {
			return usageError{err}
		}
		return nil
	}
}
