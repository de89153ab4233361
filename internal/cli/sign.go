package cli

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/ferrydeploy/ferry/internal/signature"
)

func newSign(env Env) *cobra.Command {
	var key string
	cmd := &cobra.Command{
		Use:   "sign FILE --key KEY",
		Short: "Sign a file (a ferry apply manifest): adds a line to FILE.sig",
		Long: `Sign signs FILE's bytes with KEY (ferry keygen) and appends the signature to
FILE.sig, which ferry apply --trusted-keys looks for next to the manifest
(on disk, or at the manifest's URL + ".sig"). Serve both files together.`,
		Example: `  ferry sign deploy.yml --key ~/.ferry/ops.key
  ferry apply deploy.yml --trusted-keys /etc/ferry/trusted.pub`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if key == "" {
				return usageError{fmt.Errorf("--key is required")}
			}
			priv, err := signature.LoadPrivate(key)
			if err != nil {
				return usageError{fmt.Errorf("--key: %w", err)}
			}
			b, err := os.ReadFile(a[0])
			if err != nil {
				return err
			}
			sig := signature.Sign(priv, signature.FileMessage(b))
			f, err := os.OpenFile(a[0]+".sig", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
			if err != nil {
				return err
			}
			if _, err := f.WriteString(signature.FormatSigLine(sig)); err != nil {
				f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "signed %s with key %s: %s.sig\n", a[0], signature.KeyID(sig.Key), a[0])
			return nil
		},
	}
	cmd.Flags().StringVar(&key, "key", "", "private key (ferry keygen NAME makes NAME.key)")
	return cmd
}
