package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/client"
)

// joinTokenEnv is where an agent (and ferry agent install) takes a join
// token from, so that it never sits in a command line, which every local
// user reads in /proc/PID/cmdline.
const joinTokenEnv = "FERRY_JOIN_TOKEN"

// newAgentJoinToken is `ferry agent join-token`.
func newAgentJoinToken(env Env) *cobra.Command {
	var (
		req    api.JoinTokenRequest
		output string
	)
	cmd := &cobra.Command{
		Use:   "join-token --group GROUP [--group GROUP…]",
		Short: "Create, list and revoke the tokens hosts join groups with (admin)",
		Long: `Join-token creates a token an agent registers with, into the given groups,
and prints the command to run on each host. The agent trades it for its own
credential at the first start and keeps that; the join token is needed only
until then. It expires after --ttl (default 1h), and with --uses N after N
hosts joined. The printed command passes it in the environment
(FERRY_JOIN_TOKEN), never in the command line.

A join never takes over a host that already joined: to replace a machine
under the same name, remove the old host (ferry host rm NAME) or make a
token for exactly that host with --replace NAME; it must name all the
host's groups.`,
		Example: `  ferry agent join-token --group prod
  ferry agent join-token --group prod --group eu --ttl 30m --uses 3 -o json
  ferry agent join-token --group prod --replace web-1
  ferry agent join-token list
  ferry agent join-token revoke 1a2b3c4d5e6f7a8b`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if len(req.Groups) == 0 {
				return usageError{fmt.Errorf("--group is required: the group(s) the hosts join")}
			}
			if req.TTL < 0 {
				return usageError{fmt.Errorf("--ttl cannot be negative")}
			}
			if req.Uses < 0 {
				return usageError{fmt.Errorf("--uses cannot be negative")}
			}
			cfg, err := loadClientConfig()
			if err != nil {
				return err
			}
			c, err := client.New(cfg.Server, cfg.Token, cfg.CASHA256)
			if err != nil {
				return err
			}
			tok, err := c.CreateJoinToken(cmd.Context(), req)
			if err != nil {
				return err
			}
			command := joinCommand(c.Server(), tok.Secret, cfg.CASHA256)
			if output == "json" {
				return writeJSON(env.Stdout, struct {
					api.TokenCreated
					Command string `json:"command"`
				}{tok, command})
			}
			fmt.Fprintf(env.Stdout, "Join token for %s:\n\n  %s\n\nOn each host, run:\n\n  %s\n",
				strings.Join(tok.Groups, ", "), tok.Secret, command)
			fmt.Fprintf(env.Stdout, "\nor write the token to a file (mode 0600) and give --join-file FILE; ferry agent install\n--server takes it the same way and writes a unit that joins.\n")
			var limits []string
			if !tok.Expires.IsZero() {
				limits = append(limits, "expires "+tok.Expires.Local().Format("2006-01-02 15:04"))
			}
			if tok.Uses > 0 {
				limits = append(limits, fmt.Sprintf("lets %d host(s) join", tok.Uses))
			}
			if tok.Replace != "" {
				limits = append(limits, "replaces host "+tok.Replace)
			}
			if len(limits) > 0 {
				fmt.Fprintf(env.Stdout, "\nThe token %s.\n", strings.Join(limits, ", "))
			}
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&req.Groups, "group", nil, "a group the hosts join (repeat for several)")
	cmd.Flags().DurationVar(&req.TTL, "ttl", 0, "how long the token can be used to join (server default: 1h)")
	cmd.Flags().IntVar(&req.Uses, "uses", 0, "how many hosts may join with it (default: any number until it expires)")
	cmd.Flags().StringVar(&req.Replace, "replace", "", "let one join take over this existing host (its old credential is revoked)")
	addOutputFlag(cmd, &output)
	cmd.AddCommand(newJoinTokenList(env), newJoinTokenRevoke(env))
	return cmd
}

func newJoinTokenList(env Env) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List join tokens: groups, uses, expiry, state (admin)",
		Example: "  ferry agent join-token list\n  ferry agent join-token list -o json",
		Args:    args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			get := func(ctx context.Context, c *client.Client) ([]api.Token, error) { return c.JoinTokens(ctx) }
			return showFromServer(cmd, env, output, get, printJoinTokens)
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}

func newJoinTokenRevoke(env Env) *cobra.Command {
	cmd := revokeCommand(env, "join token")
	cmd.Short = "Revoke a join token: no host joins with it from now on (admin)"
	cmd.Long = "Revoke makes the server refuse the join token from now on; hosts that already joined keep their own credentials. ferry agent join-token list shows the IDs."
	cmd.Example = "  ferry agent join-token revoke 1a2b3c4d5e6f7a8b"
	return cmd
}

func printJoinTokens(w io.Writer, ts []api.Token, now time.Time) {
	if len(ts) == 0 {
		fmt.Fprintln(w, "no join tokens")
		return
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tGROUPS\tUSED\tREPLACES\tBY\tCREATED\tEXPIRES\tSTATE")
	for _, t := range ts {
		state := tokenState(t, now)
		used := fmt.Sprint(t.Used)
		if t.Uses > 0 {
			used += fmt.Sprintf(" of %d", t.Uses)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, strings.Join(t.Groups, ","), used, dash(t.Replace), dash(t.By),
			when(now, t.Created), when(now, t.Expires), state)
	}
	tw.Flush()
}

// joinCommand is the command line a host joins with: the token goes in
// the environment, not in the agent's arguments.
func joinCommand(server, secret, ca string) string {
	s := joinTokenEnv + "=" + secret + " ferry agent --server " + server
	if ca != "" {
		s += " --ca-sha256 " + ca
	}
	return s
}
