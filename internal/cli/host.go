package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

// newHost is `ferry host`: what an operator does to one host.
func newHost(env Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "host",
		Short:   "Act on one host: remove it (admin)",
		Example: `  ferry host rm web-1`,
		// Without a RunE, cobra answers a mistyped subcommand with help
		// and exit 0; NoArgs makes it "unknown command" and exit 2.
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newHostRm(env))
	return cmd
}

func newHostRm(env Env) *cobra.Command {
	return &cobra.Command{
		Use:   "rm NAME",
		Short: "Forget a host: its credential, desired state and last report (admin)",
		Long: `Rm forgets a host: the server revokes its credential (its agent is refused
from then on), drops its desired state and last report, and frees its name
for a new join. Use it for a machine that is gone, or before a replacement
joins under the same name. What runs on the machine is not stopped: stop its
agent and apps there if it still lives. The token's groups must cover all
the host's groups.`,
		Example: "  ferry host rm web-1",
		Args:    args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := loadClient(env)
			if err != nil {
				return err
			}
			if err := c.RemoveHost(cmd.Context(), a[0]); err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "Removed host %s: its credential is revoked and deploys no longer wait for it.\n", a[0])
			return nil
		},
	}
}
