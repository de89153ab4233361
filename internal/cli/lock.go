package cli

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/client"
)

func newLock(env Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "lock",
		Short: "Inspect or break deploy locks",
		Long: `Only one deployment of an app to a group runs at a time: it holds a lock,
a lease the server renews while the rollout lives, so a crashed server never
leaves it stuck. Lock status shows who holds which; lock release (admin)
breaks one by hand.`,
		Example: `  ferry lock status
  ferry lock status hello --to prod
  ferry lock release hello --to prod`,
		// Without a RunE, cobra answers a mistyped subcommand with help
		// and exit 0; NoArgs makes it "unknown command" and exit 2.
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newLockStatus(env), newLockRelease(env))
	return cmd
}

func newLockStatus(env Env) *cobra.Command {
	var group, output string
	cmd := &cobra.Command{
		Use:     "status [APP] [--to GROUP]",
		Short:   "Show the deploy locks held: owner, reason, since, expiry",
		Example: "  ferry lock status\n  ferry lock status hello --to prod -o json",
		Args:    args(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			app := ""
			if len(a) == 1 {
				app = a[0]
			}
			get := func(ctx context.Context, c *client.Client) ([]api.Lock, error) {
				locks, err := c.Locks(ctx)
				return slices.DeleteFunc(locks, func(l api.Lock) bool {
					return app != "" && l.App != app || group != "" && l.Group != group
				}), err
			}
			return showFromServer(cmd, env, output, get, printLocks)
		},
	}
	cmd.Flags().StringVar(&group, "to", "", "only the lock of this group")
	addOutputFlag(cmd, &output)
	return cmd
}

func newLockRelease(env Env) *cobra.Command {
	var group string
	cmd := &cobra.Command{
		Use:   "release APP --to GROUP",
		Short: "Break the deploy lock of an app in a group (admin)",
		Long: `Release breaks the lock of APP × GROUP so another deployment may start. The
server renews a lock only while its rollout lives, so this is for a lock you
know is wrong; ferry lock status shows who holds it and why.`,
		Example: "  ferry lock release hello --to prod",
		Args:    args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if group == "" {
				return usageError{fmt.Errorf("--to GROUP is required")}
			}
			c, err := loadClient(env)
			if err != nil {
				return err
			}
			if err := c.BreakLock(cmd.Context(), a[0], group); err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "Released the deploy lock of %s in %s\n", a[0], group)
			return nil
		},
	}
	cmd.Flags().StringVar(&group, "to", "", "the group (required)")
	return cmd
}

func printLocks(w io.Writer, locks []api.Lock, now time.Time) {
	if len(locks) == 0 {
		fmt.Fprintln(w, "no deploy locks held")
		return
	}
	locks = slices.Clone(locks)
	slices.SortFunc(locks, func(a, b api.Lock) int {
		return strings.Compare(a.App+"\x00"+a.Group, b.App+"\x00"+b.Group)
	})
	tw := newTable(w)
	fmt.Fprintln(tw, "APP\tGROUP\tOWNER\tREASON\tSINCE\tEXPIRES")
	for _, l := range locks {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", l.App, l.Group, dash(l.Owner), dash(oneLine(l.Reason)),
			when(now, l.Since), until(now, l.Expires))
	}
	tw.Flush()
}

// until is how long from now t is: "in 25s", or "expired".
func until(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := t.Sub(now)
	if d <= 0 {
		return "expired"
	}
	return "in " + d.Round(time.Second).String()
}
