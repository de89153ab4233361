package cli

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/client"
)

func newLogin(env Env) *cobra.Command {
	var token, ca string
	cmd := &cobra.Command{
		Use:   "login URL --token TOKEN [--ca-sha256 HASH]",
		Short: "Save the server, token and CA pin the CLI uses",
		Long: `Login checks the token against the server and saves server, token and CA
pin to $XDG_CONFIG_HOME/ferry/config.json (default ~/.config/ferry/config.json,
mode 0600). Every command that talks to the server uses them; FERRY_SERVER,
FERRY_TOKEN and FERRY_CA_SHA256 override the file.

The CA pin is the hex sha256 of the server CA certificate's DER bytes, which
ferry server prints at its first start (openssl x509 -in DATA/tls/ca.crt
-outform der | sha256sum). Without it the server's certificate must be
signed by a CA the system trusts (--tls-cert on the server).

--token - reads the token from stdin, keeping it out of shell history.`,
		Example: `  ferry login https://deploy.example.com:7400 --token fy_3k… --ca-sha256 9f86d081884c7d65…
  pass show ferry/prod | ferry login https://deploy.example.com:7400 --token -
  FERRY_SERVER=https://10.0.0.5:7400 FERRY_TOKEN=… ferry status`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if token == "-" {
				b, err := io.ReadAll(io.LimitReader(env.Stdin, 4096))
				if err != nil {
					return fmt.Errorf("login: read the token from stdin: %w", err)
				}
				token = strings.TrimSpace(string(b))
			}
			if token == "" {
				token = os.Getenv(EnvToken)
			}
			if token == "" {
				return usageError{fmt.Errorf("--token is required (or - to read it from stdin)")}
			}
			ca = strings.ToLower(strings.TrimSpace(ca))
			if ca != "" {
				if err := ferry.CheckSHA256(ca); err != nil {
					return usageError{fmt.Errorf("--ca-sha256, the CA certificate's sha256: %w", err)}
				}
			}
			us, err := client.ParseServers(a[0])
			if err != nil {
				return usageError{err}
			}
			server := client.JoinServers(us)
			c, err := client.New(server, token, ca)
			if err != nil {
				return err
			}
			if _, err := c.Apps(cmd.Context()); err != nil {
				return fmt.Errorf("login: %w", err)
			}
			path, err := clientConfigPath(os.Getenv)
			if err != nil {
				return err
			}
			if err := writeClientConfig(path, clientConfig{Server: server, Token: token, CASHA256: ca}); err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "Logged in to %s; saved to %s\n", server, path)
			return nil
		},
	}
	cmd.Flags().StringVar(&token, "token", "", "API token (- reads it from stdin; default $"+EnvToken+")")
	cmd.Flags().StringVar(&ca, "ca-sha256", "", "hex sha256 of the server CA certificate (DER) to trust instead of the system roots")
	return cmd
}
