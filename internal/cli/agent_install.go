package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ferrydeploy/ferry/internal/export"
	"github.com/ferrydeploy/ferry/internal/fsutil"
)

func newAgentInstall(env Env) *cobra.Command {
	var (
		opt      export.AgentOptions
		dir      string
		joinFrom string
		output   string
	)
	cmd := &cobra.Command{
		Use:   "install --desired FILE|URL | --server URL --ca-sha256 HASH",
		Short: "Write a systemd unit that runs ferry agent on this host",
		Long: `Install writes DIR/ferry-agent.service (DIR defaults to /etc/systemd/system)
that runs "ferry agent" with the given --root and either --desired or
--server, restarts it always, and starts it once the network is online.

The unit uses KillMode=process: stopping or restarting the agent signals the
agent alone, not the apps it supervises, which a restarted agent adopts. So
upgrading ferry never stops the apps.

With --server, the join token (from $FERRY_JOIN_TOKEN, or --join-file FILE)
is written to ROOT/join.token (0600) and the unit passes that file to the
agent, which joins at its first start, keeps its own credential in ROOT and
removes the token file; restarts use the credential. The token never
appears in the unit or in a command line.

It does not run systemctl; it prints the command to run next.`,
		Example: `  ferry agent install --desired /etc/ferry/desired.yaml
  FERRY_JOIN_TOKEN=ferry_… ferry agent install --server https://ferry.example.com:7443 --ca-sha256 9f86… --name web-1
  ferry agent install --desired https://example.com/hosts/web-1.yaml --binary /usr/local/bin/ferry -o /tmp/units`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if (opt.Desired == "") == (opt.Server == "") {
				return usageError{errors.New("set exactly one of --desired and --server")}
			}
			var err error
			if opt.Desired != "" && !strings.Contains(opt.Desired, "://") {
				// The unit runs from /, so a relative path would name another file.
				if opt.Desired, err = filepath.Abs(opt.Desired); err != nil {
					return fmt.Errorf("agent install: %w", err)
				}
			}
			if opt.Binary == "" {
				if opt.Binary, err = os.Executable(); err != nil {
					return fmt.Errorf("agent install: finding ferry's own binary: %w (pass --binary)", err)
				}
			}
			for _, p := range []*string{&opt.Binary, &opt.Root, &dir} {
				if *p, err = filepath.Abs(*p); err != nil {
					return fmt.Errorf("agent install: %w", err)
				}
			}
			if fi, err := os.Stat(opt.Binary); err != nil || fi.IsDir() {
				return usageError{fmt.Errorf("--binary %s: not a file the unit can run", opt.Binary)}
			}
			var written []string
			if opt.Server != "" {
				path, err := installJoinToken(opt.Root, joinFrom)
				if err != nil {
					return err
				}
				if path != "" {
					written = append(written, path)
				}
				opt.JoinFile = filepath.Join(opt.Root, joinTokenFile)
			}
			unit, err := export.AgentUnit(opt)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return fmt.Errorf("agent install: %w", err)
			}
			path := filepath.Join(dir, export.AgentUnitName)
			if err := fsutil.WriteFile(path, unit, 0o644); err != nil {
				return fmt.Errorf("agent install: %w", err)
			}
			written = append(written, path)
			next := "systemctl daemon-reload && systemctl enable --now " + export.AgentUnitName
			if output == "json" {
				return writeJSON(env.Stdout, map[string]any{"written": written, "next": next})
			}
			for _, w := range written {
				fmt.Fprintf(env.Stdout, "wrote %s\n", w)
			}
			fmt.Fprintf(env.Stdout, "next: %s\n", next)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&opt.Desired, "desired", "", "the agent reads this host's desired state from FILE or URL")
	f.StringVar(&opt.Server, "server", "", "the agent follows this ferry server")
	f.StringVar(&opt.Root, "root", "/var/lib/ferry", "the agent's root directory")
	f.StringVar(&opt.Name, "name", "", "the agent's host name (default: the agent's own default)")
	f.StringVar(&opt.CASHA256, "ca-sha256", "", "sha256 of the server's CA certificate, as ferry server prints it")
	f.StringVar(&joinFrom, "join-file", "", "read the join token from this file (default: $"+joinTokenEnv+")")
	f.StringVar(&opt.Binary, "binary", "", "ferry binary the unit runs (default: this one)")
	f.DurationVar(&opt.StopTimeout, "stop-timeout", 0, "TimeoutStopSec of the unit (default 30s)")
	f.StringVarP(&dir, "out", "o", "/etc/systemd/system", "directory to write ferry-agent.service to")
	f.StringVar(&output, "output", "text", "output format: text or json")
	return cmd
}

// joinTokenFile is where ferry agent install leaves the join token for the
// agent's first start, under its root.
const joinTokenFile = "join.token"

// installJoinToken writes the join token (from file, or $FERRY_JOIN_TOKEN)
// to root/join.token, 0600, and returns its path; "" when there is none
// because the agent has joined already. Without either it says what to
// give.
func installJoinToken(root, file string) (string, error) {
	tok := os.Getenv(joinTokenEnv)
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", usageError{fmt.Errorf("--join-file: %w", err)}
		}
		tok = string(b)
	}
	tok = strings.TrimSpace(tok)
	if tok == "" {
		if _, err := os.Stat(filepath.Join(root, credentialFile)); err == nil {
			return "", nil
		}
		return "", usageError{fmt.Errorf("the agent has not joined yet: give the join token in $%s or --join-file FILE (ferry agent join-token --group G prints one)", joinTokenEnv)}
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", fmt.Errorf("agent install: %w", err)
	}
	path := filepath.Join(root, joinTokenFile)
	if err := fsutil.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("agent install: %w", err)
	}
	return path, nil
}
