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

func newToken(env Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create, list and revoke scoped API tokens",
		Long: `API tokens carry a role and, optionally, the apps and groups they may touch:

  viewer    read status, releases, history
  deployer  also publish, deploy, promote, rollback
  admin     also tokens, join tokens and locks

The server keeps only a hash of each token: its secret is shown once, when
it is created.`,
		Example: `  ferry token create --role deployer --apps hello --groups staging --name ci-hello
  ferry token list
  ferry token revoke tok_1a2b3c`,
		// Without a RunE, cobra answers a mistyped subcommand with help
		// and exit 0; NoArgs makes it "unknown command" and exit 2.
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newTokenCreate(env), newTokenList(env), newTokenRevoke(env))
	return cmd
}

func newTokenCreate(env Env) *cobra.Command {
	var (
		req    api.TokenRequest
		output string
	)
	cmd := &cobra.Command{
		Use:   "create --role viewer|deployer|admin --name NAME",
		Short: "Create an API token and print its secret once",
		Example: `  ferry token create --role viewer --name dashboard
  ferry token create --role deployer --apps hello,api --groups staging --ttl 720h
  ferry token create --role admin --name alice -o json`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			switch req.Role {
			case api.RoleViewer, api.RoleDeployer, api.RoleAdmin:
			case "":
				return usageError{fmt.Errorf("--role is required: viewer, deployer or admin")}
			default:
				return usageError{fmt.Errorf("--role %q: use viewer, deployer or admin", req.Role)}
			}
			if req.Name == "" {
				return usageError{fmt.Errorf("--name is required: who or what the token is for (it shows in ferry token list and the audit log)")}
			}
			if req.TTL < 0 {
				return usageError{fmt.Errorf("--ttl cannot be negative")}
			}
			c, err := loadClient(env)
			if err != nil {
				return err
			}
			tok, err := c.CreateToken(cmd.Context(), req)
			if err != nil {
				return err
			}
			fmt.Fprintln(env.Stderr, "Keep the secret now: it is shown only this once (the server keeps a hash).")
			if output == "json" {
				return writeJSON(env.Stdout, tok)
			}
			fmt.Fprintf(env.Stdout, "Token %s: %s\n\n  %s\n\n", tok.ID, tokenScope(tok.Token), tok.Secret)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Role, "role", "", "viewer, deployer or admin (required)")
	f.StringSliceVar(&req.Apps, "apps", nil, "apps the token may touch (default: all)")
	f.StringSliceVar(&req.Groups, "groups", nil, "groups the token may touch (default: all)")
	f.StringVar(&req.Name, "name", "", "who or what the token is for, shown in ferry token list and the audit log (required)")
	f.DurationVar(&req.TTL, "ttl", 0, "expire after this long, e.g. 720h (default: never)")
	addOutputFlag(cmd, &output)
	return cmd
}

func newTokenList(env Env) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List API tokens and agent credentials (without secrets)",
		Example: "  ferry token list\n  ferry token list -o json",
		Args:    args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			get := func(ctx context.Context, c *client.Client) ([]api.Token, error) { return c.Tokens(ctx) }
			return showFromServer(cmd, env, output, get, printTokens)
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}

func newTokenRevoke(env Env) *cobra.Command {
	cmd := revokeCommand(env, "token")
	cmd.Short = "Revoke an API token or agent credential"
	cmd.Long = "Revoke makes the server refuse the token from now on. ferry token list shows the IDs."
	cmd.Example = "  ferry token revoke tok_1a2b3c"
	return cmd
}

// revokeCommand is `revoke ID` for a kind of token ("token", "join
// token"): the server's one revocation route serves them all.
func revokeCommand(env Env, kind string) *cobra.Command {
	return &cobra.Command{
		Use:  "revoke ID",
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := loadClient(env)
			if err != nil {
				return err
			}
			if err := c.RevokeToken(cmd.Context(), a[0]); err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "Revoked %s %s\n", kind, a[0])
			return nil
		},
	}
}

// tokenState is a token's state as the listings show it.
func tokenState(t api.Token, now time.Time) string {
	switch {
	case t.Revoked:
		return "revoked"
	case !t.Expires.IsZero() && !now.Before(t.Expires):
		return "expired"
	case t.Uses > 0 && t.Used >= t.Uses:
		return "used up"
	}
	return "active"
}

func printTokens(w io.Writer, ts []api.Token, now time.Time) {
	if len(ts) == 0 {
		fmt.Fprintln(w, "no tokens")
		return
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tNAME\tROLE\tSCOPE\tCREATED\tEXPIRES\tSTATE")
	for _, t := range ts {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, dash(t.Name), t.Role, scopeOf(t),
			when(now, t.Created), when(now, t.Expires), tokenState(t, now))
	}
	tw.Flush()
}

// scopeOf is what a token may touch: "apps hello; groups prod", or "all".
func scopeOf(t api.Token) string {
	if t.Host != "" {
		return "host " + t.Host
	}
	var parts []string
	if len(t.Apps) > 0 {
		parts = append(parts, "apps "+strings.Join(t.Apps, ","))
	}
	if len(t.Groups) > 0 {
		parts = append(parts, "groups "+strings.Join(t.Groups, ","))
	}
	if len(parts) == 0 {
		return "all"
	}
	return strings.Join(parts, "; ")
}

// tokenScope describes a new token for the line above its secret.
func tokenScope(t api.Token) string {
	s := t.Role + ", " + scopeOf(t)
	if !t.Expires.IsZero() {
		s += ", expires " + t.Expires.Local().Format("2006-01-02 15:04")
	}
	return s
}
