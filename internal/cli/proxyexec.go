package cli

import (
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/ferrydeploy/ferry/internal/agent/proxyd"
)

// newProxyExec is the agent's proxy process, which holds the public ports
// and proxies them so that both outlive the agent (package proxyd). The
// agent starts it; not for people: hidden.
func newProxyExec(env Env) *cobra.Command {
	var root, logLevel string
	cmd := &cobra.Command{
		Use:    proxyd.Command + " --root ROOT",
		Hidden: true,
		Args:   args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
				return usageError{fmt.Errorf("--log-level %q: use debug, info, warn or error", logLevel)}
			}
			log := slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: lvl})).With("part", "proxy")
			return proxyd.Main(cmd.Context(), root, log)
		},
	}
	cmd.Flags().StringVar(&root, "root", DefaultAgentRoot, "the agent's root directory")
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
}
