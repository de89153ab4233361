package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/client"
)

// newAgentJoinToken is `ferry agent join-token`.
func newAgentJoinToken(env Env) *cobra.Command {
	var (
		req    api.JoinTokenRequest
		output string
	)
	cmd := &cobra.Command{
		Use:   "join-token --group GROUP [--group GROUP…]",
		Short: "Create a token hosts join groups with (admin)",
		Long: `Join-token creates a token an agent registers with, into the given groups,
and prints the command to run on each host. The agent trades it for its own
credential at the first start and keeps that; the join token is needed only
until then, and expires after --ttl.`,
		Example: `  ferry agent join-token --group prod
  ferry agent join-token --group prod --group eu --ttl 1h -o json`,
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
			if !tok.Expires.IsZero() {
				fmt.Fprintf(env.Stdout, "\nThe token expires %s.\n", tok.Expires.Local().Format("2006-01-02 15:04"))
			}
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&req.Groups, "group", nil, "a group the hosts join (repeat for several)")
	cmd.Flags().DurationVar(&req.TTL, "ttl", 0, "how long the token can be used to join (server default: 24h)")
	addOutputFlag(cmd, &output)
	return cmd
}

// joinCommand is the ferry agent command line a host joins with.
func joinCommand(server, secret, ca string) string {
	s := "ferry agent --server " + server + " --join " + secret
	if ca != "" {
		s += " --ca-sha256 " + ca
	}
	return s
}
