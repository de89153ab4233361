package cli

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/joho/godotenv"
	"github.com/spf13/cobra"

	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/client"
)

func newConfig(env Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "An app's environment per group: values and secrets, in revisions",
		Long: `An app's config is its environment: app-wide values (no --group), which
every group inherits, and each group's own values, which override them.
Every change makes a config revision, recorded with who and when. A change
restarts nothing: deploy it (ferry deploy APP --to GROUP, or config set
--deploy), and it rolls out with the same batches, health checks and
automatic rollback as code. Each release records the config revision it was
made with, and a rollback goes back to both.

Secrets (--secret) are encrypted at rest with the server's key, sent only to
the agents of their group, written on the host only into the release's 0600
env file, and read back by nobody: the API and this command show ••••.`,
	}
	cmd.AddCommand(newConfigSet(env), newConfigUnset(env), newConfigGet(env), newConfigList(env), newConfigHistory(env), newConfigDiff(env))
	return cmd
}

func newConfigSet(env Env) *cobra.Command {
	var (
		group, fromFile, output string
		secret, deploy, detach  bool
	)
	cmd := &cobra.Command{
		Use:   "set APP [--group G] [--secret] KEY=VALUE… | --from-file .env",
		Short: "Set variables (a new config revision)",
		Long: `Set sets KEY=VALUE pairs, or every variable of a .env file, app-wide or in
--group. KEY=- reads that value from stdin, so that a secret never enters
the shell's history. --deploy then deploys the app's running artifact with
the new config to --group.`,
		Example: `  ferry config set hello --group prod LOG_LEVEL=info DATABASE_URL=postgres://db/hello
  ferry config set hello --group prod --secret API_KEY=- < api_key.txt
  ferry config set hello --from-file .env
  ferry config set hello --group prod FEATURE_X=on --deploy`,
		Args: args(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if deploy && group == "" {
				return usageError{fmt.Errorf("--deploy needs --group: the group to deploy the new config to")}
			}
			set := map[string]string{}
			if fromFile != "" {
				vals, err := godotenv.Read(fromFile)
				if err != nil {
					return usageError{fmt.Errorf("--from-file: %w", err)}
				}
				for k, v := range vals {
					set[k] = v
				}
			}
			stdinUsed := false
			for _, kv := range a[1:] {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return usageError{fmt.Errorf("%q: want KEY=VALUE (KEY=- reads the value from stdin)", kv)}
				}
				if v == "-" {
					if stdinUsed {
						return usageError{fmt.Errorf("only one KEY=- can read stdin")}
					}
					stdinUsed = true
					b, err := io.ReadAll(bufio.NewReader(env.Stdin))
					if err != nil {
						return err
					}
					v = strings.TrimRight(string(b), "\r\n")
				}
				set[k] = v
			}
			if len(set) == 0 {
				return usageError{fmt.Errorf("nothing to set: give KEY=VALUE or --from-file")}
			}
			c, err := loadClient(env)
			if err != nil {
				return err
			}
			rev, err := c.ChangeConfig(cmd.Context(), a[0], api.ConfigChange{Group: group, Set: set, Secret: secret})
			if err != nil {
				return err
			}
			if !deploy {
				return printRevision(env, output, rev)
			}
			fmt.Fprintf(env.Stderr, "config r%d: set %s; deploying it to %s\n", rev.Rev, strings.Join(rev.Set, ", "), group)
			d, err := c.Deploy(cmd.Context(), api.DeployRequest{App: a[0], Group: group})
			if err != nil {
				return err
			}
			return followDeployment(cmd, env, c, d, detach, output, false)
		},
	}
	f := cmd.Flags()
	f.StringVar(&group, "group", "", "the group whose values these are (default: app-wide)")
	f.BoolVar(&secret, "secret", false, "the values are secrets: encrypted, never shown")
	f.StringVar(&fromFile, "from-file", "", "set every variable of this .env file")
	f.BoolVar(&deploy, "deploy", false, "deploy the running artifact with the new config to --group")
	f.BoolVar(&detach, "detach", false, "with --deploy: print the deployment id and return")
	addOutputFlag(cmd, &output)
	return cmd
}

func newConfigUnset(env Env) *cobra.Command {
	var group, output string
	cmd := &cobra.Command{
		Use:     "unset APP [--group G] KEY…",
		Short:   "Remove variables (a new config revision)",
		Example: `  ferry config unset hello --group prod FEATURE_X`,
		Args:    args(cobra.MinimumNArgs(2)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			c, err := loadClient(env)
			if err != nil {
				return err
			}
			rev, err := c.ChangeConfig(cmd.Context(), a[0], api.ConfigChange{Group: group, Unset: a[1:]})
			if err != nil {
				return err
			}
			return printRevision(env, output, rev)
		},
	}
	cmd.Flags().StringVar(&group, "group", "", "the group whose values these are (default: app-wide)")
	addOutputFlag(cmd, &output)
	return cmd
}

func printRevision(env Env, output string, rev api.ConfigRevision) error {
	if output == "json" {
		return writeJSON(env.Stdout, rev)
	}
	fmt.Fprintf(env.Stdout, "config r%d of %s %s: %s (deploy it: ferry deploy %s --to GROUP)\n",
		rev.Rev, rev.App, scopeLabel(rev.Group), revisionSummary(rev), rev.App)
	return nil
}

func scopeLabel(group string) string {
	if group == "" || group == api.ScopeApp {
		return "app-wide"
	}
	return "in " + group
}

func revisionSummary(r api.ConfigRevision) string {
	var parts []string
	if len(r.Set) > 0 {
		what := "set "
		if r.Secret {
			what = "set secret "
		}
		parts = append(parts, what+strings.Join(r.Set, ", "))
	}
	if len(r.Unset) > 0 {
		parts = append(parts, "unset "+strings.Join(r.Unset, ", "))
	}
	return strings.Join(parts, "; ")
}

func newConfigGet(env Env) *cobra.Command {
	var group string
	cmd := &cobra.Command{
		Use:   "get APP KEY [--group G]",
		Short: "Print one variable's value as the group sees it (a secret prints ••••)",
		Example: `  ferry config get hello LOG_LEVEL --group prod
  url=$(ferry config get hello DATABASE_URL --group prod)`,
		Args: args(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := loadClient(env)
			if err != nil {
				return err
			}
			cfg, err := c.Config(cmd.Context(), a[0], group, 0)
			if err != nil {
				return err
			}
			for _, v := range cfg.Vars {
				if v.Key == a[1] && (group != "" || v.Scope == api.ScopeApp) {
					fmt.Fprintln(env.Stdout, v.Value)
					return nil
				}
			}
			return fmt.Errorf("%s is not set for %s %s", a[1], a[0], scopeLabel(group))
		},
	}
	cmd.Flags().StringVar(&group, "group", "", "whose view: app-wide values with the group's overrides (default: app-wide)")
	return cmd
}

func newConfigList(env Env) *cobra.Command {
	var (
		group, output string
		rev           int
	)
	cmd := &cobra.Command{
		Use:   "list APP [--group G] [--rev N]",
		Short: "List variables: every scope, or what one group gets",
		Example: `  ferry config list hello
  ferry config list hello --group prod --rev 5 -o json`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			get := func(ctx context.Context, c *client.Client) (api.Config, error) {
				return c.Config(ctx, a[0], group, rev)
			}
			return showFromServer(cmd, env, output, get, func(w io.Writer, cfg api.Config, _ time.Time) {
				if len(cfg.Vars) == 0 {
					fmt.Fprintf(w, "%s has no config %s (ferry config set %s KEY=VALUE)\n", cfg.App, scopeLabel(group), cfg.App)
					return
				}
				fmt.Fprintf(w, "config r%d of %s %s\n", cfg.Rev, cfg.App, scopeLabel(group))
				tw := newTable(w)
				fmt.Fprintln(tw, "KEY\tVALUE\tFROM")
				for _, v := range cfg.Vars {
					fmt.Fprintf(tw, "%s\t%s\t%s\n", v.Key, v.Value, v.Scope)
				}
				tw.Flush()
			})
		},
	}
	cmd.Flags().StringVar(&group, "group", "", "what this group gets: app-wide values with its overrides (default: every scope)")
	cmd.Flags().IntVar(&rev, "rev", 0, "config revision (default: the newest)")
	addOutputFlag(cmd, &output)
	return cmd
}

func newConfigHistory(env Env) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "history APP",
		Short:   "List config revisions: what changed, who, when (never values)",
		Example: `  ferry config history hello`,
		Args:    args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			get := func(ctx context.Context, c *client.Client) ([]api.ConfigRevision, error) {
				return c.ConfigHistory(ctx, a[0])
			}
			return showFromServer(cmd, env, output, get, func(w io.Writer, revs []api.ConfigRevision, now time.Time) {
				if len(revs) == 0 {
					fmt.Fprintf(w, "%s has no config revisions\n", a[0])
					return
				}
				tw := newTable(w)
				fmt.Fprintln(tw, "REV\tSCOPE\tCHANGE\tBY\tWHEN")
				for _, r := range revs {
					fmt.Fprintf(tw, "r%d\t%s\t%s\t%s\t%s\n", r.Rev, scopeLabel(r.Group), revisionSummary(r), r.By, when(now, r.At))
				}
				tw.Flush()
			})
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}

func newConfigDiff(env Env) *cobra.Command {
	var group, output string
	cmd := &cobra.Command{
		Use:   "diff APP REV REV [--group G]",
		Short: "What changed between two config revisions (secrets: only that they changed)",
		Example: `  ferry config diff hello r5 r7
  ferry config diff hello 5 7 --group prod`,
		Args: args(cobra.ExactArgs(3)),
		RunE: func(cmd *cobra.Command, a []string) error {
			from, err := parseRev(a[1])
			if err != nil {
				return usageError{err}
			}
			to, err := parseRev(a[2])
			if err != nil {
				return usageError{err}
			}
			get := func(ctx context.Context, c *client.Client) ([]api.ConfigDiff, error) {
				return c.ConfigDiff(ctx, a[0], group, from, to)
			}
			return showFromServer(cmd, env, output, get, func(w io.Writer, d []api.ConfigDiff, _ time.Time) {
				if len(d) == 0 {
					fmt.Fprintf(w, "no difference between r%d and r%d\n", from, to)
					return
				}
				for _, x := range d {
					switch x.Change {
					case "added":
						fmt.Fprintf(w, "+ %s=%s (%s)\n", x.Key, x.New, x.Scope)
					case "removed":
						fmt.Fprintf(w, "- %s=%s (%s)\n", x.Key, x.Old, x.Scope)
					default:
						fmt.Fprintf(w, "~ %s: %s → %s (%s)\n", x.Key, x.Old, x.New, x.Scope)
					}
				}
			})
		},
	}
	cmd.Flags().StringVar(&group, "group", "", "compare what this group gets (default: every scope)")
	addOutputFlag(cmd, &output)
	return cmd
}

func parseRev(s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimPrefix(strings.TrimPrefix(s, "rev"), "r"))
	if err != nil || n < 0 {
		return 0, fmt.Errorf("revision %q: want a number such as 5, r5 or rev5", s)
	}
	return n, nil
}
