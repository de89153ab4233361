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
		opt    export.AgentOptions
		dir    string
		output string
	)
	cmd := &cobra.Command{
		Use:   "install --desired FILE|URL | --server URL",
		Short: "Write a systemd unit that runs ferry agent on this host",
		Long: `Install writes DIR/ferry-agent.service (DIR defaults to /etc/systemd/system)
that runs "ferry agent" with the given --root and either --desired or
--server, restarts it always, and starts it once the network is online.

The unit uses KillMode=process: stopping or restarting the agent signals the
agent alone, not the apps it supervises, which a restarted agent adopts. So
upgrading ferry never stops the apps.

It does not run systemctl; it prints the command to run next.`,
		Example: `  ferry agent install --desired /etc/ferry/desired.yaml
  ferry agent install --server https://ferry.example.com:7443 --name web-1
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
			next := "systemctl daemon-reload && systemctl enable --now " + export.AgentUnitName
			if output == "json" {
				return writeJSON(env.Stdout, map[string]any{"written": []string{path}, "next": next})
			}
			fmt.Fprintf(env.Stdout, "wrote %s\nnext: %s\n", path, next)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&opt.Desired, "desired", "", "the agent reads this host's desired state from FILE or URL")
	f.StringVar(&opt.Server, "server", "", "the agent follows this ferry server")
	f.StringVar(&opt.Root, "root", "/var/lib/ferry", "the agent's root directory")
	f.StringVar(&opt.Name, "name", "", "the agent's host name (default: the agent's own default)")
	f.StringVar(&opt.Binary, "binary", "", "ferry binary the unit runs (default: this one)")
	f.DurationVar(&opt.StopTimeout, "stop-timeout", 0, "TimeoutStopSec of the unit (default 30s)")
	f.StringVarP(&dir, "out", "o", "/etc/systemd/system", "directory to write ferry-agent.service to")
	f.StringVar(&output, "output", "text", "output format: text or json")
	return cmd
}
