package cli

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/client"
	"github.com/ferrydeploy/ferry/internal/signature"
)

func newKeygen(env Env) *cobra.Command {
	var comment string
	cmd := &cobra.Command{
		Use:   "keygen NAME",
		Short: "Make an ed25519 key pair for signing releases",
		Long: `Keygen writes NAME.key (the private key, mode 0600: keep it secret) and
NAME.pub (one line: the public key). Sign releases with
'ferry deploy --sign NAME.key' or 'ferry publish --sign NAME.key'; give the
.pub lines to agents as --trusted-keys FILE, and they run only releases
signed by one of them.`,
		Example: `  ferry keygen release
  ferry keygen ~/.ferry/alice --comment alice@example.com`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			line, err := signature.Generate(a[0], comment)
			if err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "wrote %s.key (secret) and %s.pub:\n%s\n", a[0], a[0], line)
			return nil
		},
	}
	cmd.Flags().StringVar(&comment, "comment", os.Getenv("USER"), "a name to remember the key by, at the end of the .pub line")
	return cmd
}

// signedRelease makes (or finds) the release req selects, signs its record
// with the key at keyPath and returns its number.
func signedRelease(ctx context.Context, env Env, c *client.Client, keyPath string, req api.DeployRequest) (int, error) {
	priv, err := signature.LoadPrivate(keyPath)
	if err != nil {
		return 0, usageError{fmt.Errorf("--sign: %w", err)}
	}
	rel := api.Release{Number: req.Release}
	if rel.Number == 0 {
		if rel, err = c.MakeRelease(ctx, req.App, api.ReleaseRequest{Group: req.Group, Version: req.Version, SHA256: req.SHA256}); err != nil {
			return 0, err
		}
	} else {
		rs, err := c.Releases(ctx, req.App)
		if err != nil {
			return 0, err
		}
		found := false
		for _, r := range rs {
			if r.Number == rel.Number {
				rel, found = r, true
			}
		}
		if !found {
			return 0, fmt.Errorf("app %s has no release v%d", req.App, req.Release)
		}
	}
	sig := signature.Sign(priv, signature.ReleaseMessage(rel.App, rel.Number, rel.SHA256, rel.ConfigRev))
	if _, err := c.SignRelease(ctx, rel.App, rel.Number, sig); err != nil {
		return 0, err
	}
	fmt.Fprintf(env.Stderr, "signed release v%d of %s (artifact %s, config r%d) with key %s\n",
		rel.Number, rel.App, short(rel.SHA256), rel.ConfigRev, signature.KeyID(sig.Key))
	return rel.Number, nil
}
