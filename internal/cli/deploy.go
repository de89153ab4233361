package cli

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/client"
	"github.com/ferrydeploy/ferry/internal/devrun"
	"github.com/ferrydeploy/ferry/internal/fetch"
)

// watchNote is said wherever a command follows a rollout, so nobody fears
// that Ctrl-C leaves hosts half-deployed.
const watchNote = `The rollout runs on the server: Ctrl-C (or a lost connection) stops
watching, not the rollout; ferry status APP shows where it is.`

func newDeploy(env Env) *cobra.Command {
	var (
		group, strategy, batch, release, output string
		signKey                                 string
		canary                                  int
		healthTimeout, waitLock                 time.Duration
		noAutoRollback, detach                  bool
	)
	cmd := &cobra.Command{
		Use:   "deploy APP [VERSION] --to GROUP",
		Short: "Roll a release of an app out to a group of hosts",
		Long: `Deploy makes a release of APP — a published artifact with the app's newest
config — or redeploys --release vN, and rolls it out to GROUP's hosts.
VERSION is an artifact version or sha256; without it, the artifact GROUP
runs now (so a config change deploys like code), or the newest one for a
group that runs none yet. Strategies:

  --strategy all      every host at once
  --strategy rolling  --batch hosts at a time (2, or 25% of the group)
  --strategy canary   --canary hosts first, then waits for ferry promote

A batch is done when every host in it runs the release healthy. A failed
health check, or a host that does not report within --health-timeout, stops
the rollout and (unless --no-auto-rollback) rolls every touched host back to
the previous release. Flags left out come from the release's ferry.yaml
(deploy: strategy, batch, canary, health_timeout, auto_rollback), then the
server's defaults: rolling, batch 25%, health timeout 60s, auto-rollback on.

Deploy shows a live table per host and exits 0 when every host runs the
release healthy, 4 when it failed (naming the hosts and the failing check),
3 when another deployment of APP to GROUP holds the lock (--wait-lock waits
for it). --detach prints the deployment id and returns at once.

` + watchNote,
		Example: `  ferry deploy hello v1.4.0 --to prod --strategy rolling --batch 25%
  ferry deploy hello --to prod      # the running artifact with the newest config
  ferry deploy hello v1.5.0 --to prod --strategy canary --canary 1   # then: ferry promote hello --to prod
  ferry deploy hello --to prod --release v12 --wait-lock 5m
  ferry deploy hello v1.4.0 --to prod --sign ~/.ferry/release.key
  ferry deploy hello v1.4.0 --to prod --detach -o json`,
		Args: args(cobra.RangeArgs(1, 2)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if group == "" {
				return usageError{fmt.Errorf("--to GROUP is required")}
			}
			req := api.DeployRequest{App: a[0], Group: group, Canary: canary, HealthTimeout: healthTimeout,
				NoAutoRollback: noAutoRollback, WaitLock: waitLock}
			if len(a) == 2 {
				if release != "" {
					return usageError{fmt.Errorf("give VERSION or --release, not both")}
				}
				req.Version, req.SHA256 = parseVersionArg(a[1])
			}
			var err error
			if release != "" {
				if req.Release, err = parseRelease(release); err != nil {
					return usageError{fmt.Errorf("--release: %w", err)}
				}
			}
			if req.Strategy, err = parseStrategy(strategy, canary); err != nil {
				return usageError{err}
			}
			if batch != "" {
				if req.Batch, err = parseBatch(batch); err != nil {
					return usageError{fmt.Errorf("--batch: %w", err)}
				}
			}
			if canary < 0 || healthTimeout < 0 || waitLock < 0 {
				return usageError{fmt.Errorf("--canary, --health-timeout and --wait-lock cannot be negative")}
			}
			c, err := loadClient(env)
			if err != nil {
				return err
			}
			if signKey != "" {
				if req.Release, err = signedRelease(cmd.Context(), env, c, signKey, req); err != nil {
					return err
				}
				req.Version, req.SHA256 = "", ""
			}
			d, err := c.Deploy(cmd.Context(), req)
			if err != nil {
				return err
			}
			return followDeployment(cmd, env, c, d, detach, output, false)
		},
	}
	f := cmd.Flags()
	f.StringVar(&group, "to", "", "the group to deploy to (required)")
	f.StringVar(&strategy, "strategy", "", "all, rolling or canary (default rolling)")
	f.StringVar(&batch, "batch", "", "hosts per batch of a rolling deployment: a count (2) or a share of the group (default 25%)")
	f.IntVar(&canary, "canary", 0, "hosts that get the release first, then wait for ferry promote (implies --strategy canary)")
	f.DurationVar(&healthTimeout, "health-timeout", 0, "time each host has to report the release healthy (default 60s)")
	f.BoolVar(&noAutoRollback, "no-auto-rollback", false, "on failure, stop but leave the touched hosts on the new release")
	f.DurationVar(&waitLock, "wait-lock", 0, "wait this long for another deployment of APP to GROUP to end, instead of exiting 3")
	f.StringVar(&release, "release", "", "redeploy an existing release (vN) instead of making one")
	f.StringVar(&signKey, "sign", "", "sign the release with this key (ferry keygen) before deploying it")
	f.BoolVar(&detach, "detach", false, "print the deployment id and return; the rollout goes on")
	addOutputFlag(cmd, &output)
	return cmd
}

func newRollback(env Env) *cobra.Command {
	var group, release, output string
	var detach, dryRun bool
	cmd := &cobra.Command{
		Use:   "rollback APP --to GROUP [--release vN]",
		Short: "Roll a group back to the last release that was healthy everywhere",
		Long: `Rollback rolls APP in GROUP back to --release vN, or to the last release
that was healthy on every host of the group, as a normal health-gated
rollout (same batches, same exit codes as ferry deploy).

` + watchNote,
		Example: `  ferry rollback hello --to prod --dry-run
  ferry rollback hello --to prod
  ferry rollback hello --to prod --release v11
  ferry rollback hello --to prod --detach`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if group == "" {
				return usageError{fmt.Errorf("--to GROUP is required")}
			}
			req := api.RollbackRequest{App: a[0], Group: group}
			if release != "" {
				n, err := parseRelease(release)
				if err != nil {
					return usageError{fmt.Errorf("--release: %w", err)}
				}
				req.Release = n
			}
			c, err := loadClient(env)
			if err != nil {
				return err
			}
			req.DryRun = dryRun
			d, err := c.Rollback(cmd.Context(), req)
			if err != nil {
				return err
			}
			if dryRun {
				if output == "json" {
					return writeJSON(env.Stdout, d)
				}
				from := ""
				if d.From > 0 {
					from = fmt.Sprintf(" from v%d", d.From)
				}
				fmt.Fprintf(env.Stdout, "would roll %s on %s back%s to v%d\n", d.App, d.Group, from, d.Release)
				return nil
			}
			return followDeployment(cmd, env, c, d, detach, output, false)
		},
	}
	cmd.Flags().StringVar(&group, "to", "", "the group to roll back (required)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "say which release the rollback would go to, and start nothing")
	cmd.Flags().StringVar(&release, "release", "", "the release to go back to (vN; default: the last healthy on every host)")
	cmd.Flags().BoolVar(&detach, "detach", false, "print the deployment id and return; the rollout goes on")
	addOutputFlag(cmd, &output)
	return cmd
}

func newPromote(env Env) *cobra.Command {
	var group, output string
	var detach bool
	cmd := &cobra.Command{
		Use:   "promote APP --to GROUP",
		Short: "Continue a canary deployment to the rest of the group",
		Long: `Promote finds the canary deployment of APP to GROUP that waits after its
canary hosts came up healthy, and rolls it out to the rest of the group.

` + watchNote,
		Example: `  ferry deploy hello --to prod --canary 1
  ferry promote hello --to prod`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if group == "" {
				return usageError{fmt.Errorf("--to GROUP is required")}
			}
			c, err := loadClient(env)
			if err != nil {
				return err
			}
			ds, err := c.Deployments(cmd.Context(), a[0], group)
			if err != nil {
				return err
			}
			id := ""
			for _, d := range ds {
				if d.State == api.DeployWaiting {
					id = d.ID
				}
			}
			if id == "" {
				return ferry.Errorf(ferry.ENOTFOUND, "no deployment of %s to %s waits for promote (ferry deploy %s --to %s --canary N starts one)", a[0], group, a[0], group)
			}
			d, err := c.Promote(cmd.Context(), id)
			if err != nil {
				return err
			}
			return followDeployment(cmd, env, c, d, detach, output, true)
		},
	}
	cmd.Flags().StringVar(&group, "to", "", "the group whose canary deployment to continue (required)")
	cmd.Flags().BoolVar(&detach, "detach", false, "return at once; the rollout goes on")
	addOutputFlag(cmd, &output)
	return cmd
}

// followDeployment prints a started deployment (detach) or watches it to
// its end. promoted says d was just promoted: its waiting state is stale.
func followDeployment(cmd *cobra.Command, env Env, c *client.Client, d api.Deployment, detach bool, output string, promoted bool) error {
	if detach {
		if output == "json" {
			return writeJSON(env.Stdout, d)
		}
		fmt.Fprintf(env.Stdout, "%s\n", d.ID)
		fmt.Fprintf(env.Stderr, "%s started; it continues on the server (ferry status %s)\n", deploymentTitle(d), d.App)
		return nil
	}
	w := newDeployWatcher(env, c, output)
	w.promoted = promoted
	final, err := w.watch(cmd.Context(), d)
	if output == "json" && final.ID != "" {
		if jerr := writeJSON(env.Stdout, final); jerr != nil && err == nil {
			err = jerr
		}
	}
	return err
}

// parseBatch checks a batch size: a count of hosts ("2") or a share of
// the group ("25%"), and returns it as the API takes it.
func parseBatch(s string) (string, error) {
	t := strings.TrimSpace(s)
	if p, ok := strings.CutSuffix(t, "%"); ok {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n < 1 || n > 100 {
			return "", fmt.Errorf("%q: a share is 1%% to 100%%", s)
		}
		return strconv.Itoa(n) + "%", nil
	}
	n, err := strconv.Atoi(t)
	if err != nil || n < 1 {
		return "", fmt.Errorf("%q: want a count of hosts (2) or a share of the group (25%%)", s)
	}
	return strconv.Itoa(n), nil
}

// parseRelease reads a release number: v12, V12 or 12.
func parseRelease(s string) (int, error) {
	return ferry.ParseRelease(strings.TrimSpace(s))
}

// parseVersionArg tells an artifact's sha256 (optionally "sha256:…") from
// its version.
func parseVersionArg(s string) (version, sum string) {
	t := strings.ToLower(strings.TrimPrefix(s, "sha256:"))
	if ferry.CheckSHA256(t) == nil {
		return "", t
	}
	return s, ""
}

// parseStrategy checks --strategy; --canary alone means canary.
func parseStrategy(s string, canary int) (string, error) {
	switch s {
	case "":
		if canary > 0 {
			return api.StrategyCanary, nil
		}
		return "", nil
	case api.StrategyAll, api.StrategyRolling:
		if canary > 0 {
			return "", fmt.Errorf("--canary needs --strategy canary, not %s", s)
		}
		return s, nil
	case api.StrategyCanary:
		return s, nil
	}
	return "", fmt.Errorf("--strategy %q: use all, rolling or canary", s)
}

// deployWatcher follows a deployment with blocking queries and shows it:
// on a terminal a table redrawn in place, elsewhere a line per change.
type deployWatcher struct {
	env    Env
	c      *client.Client
	quiet  bool // -o json: only the final document
	tty    bool
	drawn  int                        // lines of the last table, to redraw over
	seen   map[string]api.HostRollout // line mode: what each host was
	titles map[string]string          // line mode: each deployment's last title
	// promoted: the server answers waiting-promote until its rollout
	// notices the promotion, so that state is not an end.
	promoted bool
	now      func() time.Time
	sleep    func(ctx context.Context, d time.Duration) error
}

func newDeployWatcher(env Env, c *client.Client, output string) *deployWatcher {
	return &deployWatcher{env: env, c: c, quiet: output == "json", tty: devrun.IsTerminal(env.Stdout),
		seen: map[string]api.HostRollout{}, titles: map[string]string{}, now: time.Now, sleep: fetch.Sleep}
}

// watchWait is how long one blocking query may wait on the server.
const watchWait = 30 * time.Second

// watch follows d until it ends and returns its last state: nil when it
// succeeded (or its canary waits for promote), a ferry.EHEALTH error
// naming the failed hosts when it failed or was rolled back.
func (w *deployWatcher) watch(ctx context.Context, d api.Deployment) (api.Deployment, error) {
	d, err := w.follow(ctx, d)
	if err != nil {
		return d, err
	}
	switch d.State {
	case api.DeploySucceeded:
		w.say("%s: every host runs v%d healthy\n", deploymentTitle(d), d.Release)
		return d, nil
	case api.DeployWaiting:
		w.say("canary of %s v%d healthy; continue with: ferry promote %s --to %s\n", d.App, d.Release, d.App, d.Group)
		return d, nil
	}
	// The server finishes a deployment only after its automatic rollback,
	// so d's end says how that went.
	return d, ferry.Errorf(ferry.EHEALTH, "%s", deployFailure(d))
}

// follow shows d and its changes until it reaches a final state.
func (w *deployWatcher) follow(ctx context.Context, d api.Deployment) (api.Deployment, error) {
	var index uint64
	failures := 0
	stopped := func() (api.Deployment, error) {
		fmt.Fprintf(w.env.Stderr, "\nstopped watching; deployment %s continues on the server (ferry status %s)\n", d.ID, d.App)
		return d, ctx.Err()
	}
	w.show(d)
	for !deploymentOver(d.State) || w.promoted && d.State == api.DeployWaiting {
		nd, ni, err := w.c.Deployment(ctx, d.ID, index, watchWait)
		if ctx.Err() != nil {
			return stopped()
		}
		if err != nil {
			// A server restarting mid-rollout resumes it; keep watching
			// through a short outage (no answer, or a store failing over),
			// but not through a real error.
			if failures++; !retryable(err) || failures > 30 {
				return d, fmt.Errorf("watch deployment %s (it continues on the server): %w", d.ID, err)
			}
			fmt.Fprintf(w.env.Stderr, "%v; retrying\n", err)
			w.drawn = 0 // the message is where the table was: draw anew below
			if w.sleep(ctx, 2*time.Second) != nil {
				return stopped()
			}
			continue
		}
		failures = 0
		if ni == 0 {
			// Without an index the server cannot block: poll instead.
			if w.sleep(ctx, time.Second) != nil {
				return stopped()
			}
		}
		index, d = ni, nd
		w.show(d)
	}
	return d, nil
}

func (w *deployWatcher) say(format string, a ...any) {
	if !w.quiet {
		fmt.Fprintf(w.env.Stdout, format, a...)
	}
}

// show draws d: redrawn over the last table on a terminal, else the lines
// that changed.
func (w *deployWatcher) show(d api.Deployment) {
	if w.quiet {
		return
	}
	if w.tty {
		var b strings.Builder
		renderDeployment(&b, d, w.now())
		if w.drawn > 0 {
			fmt.Fprintf(w.env.Stdout, "\x1b[%dA\x1b[J", w.drawn)
		}
		io.WriteString(w.env.Stdout, b.String())
		w.drawn = strings.Count(b.String(), "\n")
		return
	}
	printDeploymentChanges(w.env.Stdout, d, w.titles, w.seen)
}

// deploymentOver reports whether a deployment in state s will not change
// by itself any more.
func deploymentOver(s ferry.DeploymentState) bool {
	switch s {
	case api.DeploySucceeded, api.DeployFailed, api.DeployRolledBack, api.DeployWaiting:
		return true
	}
	return false
}

// deploymentTitle is e.g. "deploy hello v4 to prod (rolling, batch 25%, from v3)"
// or "rollback of hello in prod to v3 (…)".
func deploymentTitle(d api.Deployment) string {
	var opts []string
	if d.Strategy != "" {
		opts = append(opts, d.Strategy)
	}
	if d.Strategy == api.StrategyRolling && d.Batch != "" {
		opts = append(opts, "batch "+d.Batch)
	}
	if d.Strategy == api.StrategyCanary && d.Canary > 0 {
		opts = append(opts, fmt.Sprintf("canary %d", d.Canary))
	}
	if d.From > 0 {
		opts = append(opts, fmt.Sprintf("from v%d", d.From))
	}
	t := fmt.Sprintf("deploy %s v%d to %s", d.App, d.Release, d.Group)
	if d.RollbackOf != "" {
		t = fmt.Sprintf("rollback of %s in %s to v%d", d.App, d.Group, d.Release)
	}
	if len(opts) > 0 {
		t += " (" + strings.Join(opts, ", ") + ")"
	}
	return t
}

// hostsInOrder are d's hosts by batch, then name.
func hostsInOrder(d api.Deployment) []string {
	names := slices.Collect(maps.Keys(d.Hosts))
	slices.SortFunc(names, func(a, b string) int {
		if c := cmp.Compare(d.Hosts[a].Batch, d.Hosts[b].Batch); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	return names
}

// renderDeployment writes d's title, state and per-host table.
func renderDeployment(w io.Writer, d api.Deployment, now time.Time) {
	fmt.Fprintf(w, "%s: %s", deploymentTitle(d), d.State)
	if !d.Started.IsZero() {
		end := now
		if !d.Ended.IsZero() {
			end = d.Ended
		}
		fmt.Fprintf(w, " after %s", end.Sub(d.Started).Round(time.Second))
	}
	fmt.Fprintln(w)
	if d.Error != "" {
		fmt.Fprintf(w, "  %s\n", oneLine(d.Error))
	}
	if len(d.Hosts) == 0 {
		fmt.Fprintln(w, "  no hosts in the group yet")
		return
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "HOST\tBATCH\tSTATE\tERROR")
	for _, h := range hostsInOrder(d) {
		hr := d.Hosts[h]
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", h, hr.Batch, hr.State, oneLine(hr.Error))
	}
	tw.Flush()
}

// printDeploymentChanges writes, for a log rather than a terminal, a line
// when d's state changes and one per host whose part changed since seen.
func printDeploymentChanges(w io.Writer, d api.Deployment, titles map[string]string, seen map[string]api.HostRollout) {
	title := deploymentTitle(d) + ": " + string(d.State)
	if d.Error != "" {
		title += "\n  " + oneLine(d.Error)
	}
	if titles[d.ID] != title {
		titles[d.ID] = title
		fmt.Fprintln(w, title)
	}
	for _, h := range hostsInOrder(d) {
		hr := d.Hosts[h]
		key := d.ID + "/" + h
		if old, ok := seen[key]; ok && old == hr {
			continue
		}
		seen[key] = hr
		line := fmt.Sprintf("  %s  batch %d  %s", h, hr.Batch, hr.State)
		if hr.Error != "" {
			line += "  " + oneLine(hr.Error)
		}
		fmt.Fprintln(w, line)
	}
}

// deployFailure says what failed: the deployment's error, each failed
// host with its error (the failing check), and what the rollback did, in
// full: the progress table shortens errors, the final message does not.
func deployFailure(d api.Deployment) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", deploymentTitle(d), d.State)
	if d.Error != "" {
		fmt.Fprintf(&b, ": %s", strings.ReplaceAll(d.Error, "\n", " "))
	}
	// The server's error names each failed host with its reason; without
	// one, say which hosts failed. Either way each failed host's check and
	// the last lines it printed follow, from the agent's Failure.
	var bad []string
	var printed strings.Builder
	for _, h := range hostsInOrder(d) {
		hr := d.Hosts[h]
		if hr.State != ferry.HostFailed && hr.Error == "" {
			continue
		}
		if d.Error == "" {
			s := h
			if hr.Error != "" {
				s += " (" + strings.ReplaceAll(hr.Error, "\n", " ") + ")"
			}
			bad = append(bad, s)
		}
		if f := hr.Failure; f != nil && f.Output != "" {
			what := cmp.Or(f.Check, string(f.Kind))
			fmt.Fprintf(&printed, "\n%s: %s printed:\n%s", h, what, indent(f.Output, "  "))
		}
	}
	if len(bad) > 0 {
		fmt.Fprintf(&b, "; failed on %s", strings.Join(bad, ", "))
	}
	switch {
	case d.State == api.DeployRolledBack && d.From > 0:
		fmt.Fprintf(&b, "; rolled back to v%d", d.From)
	case d.State == api.DeployRolledBack:
		b.WriteString("; rolled back: the touched hosts no longer run it")
	case !d.AutoRollback:
		fmt.Fprintf(&b, "; not rolled back (auto-rollback off): touched hosts keep v%d (ferry rollback %s --to %s)", d.Release, d.App, d.Group)
	}
	return b.String() + printed.String()
}

// retryable reports whether err is worth asking again: no answer came, or
// the server said it cannot answer now. Only these kinds are retried.
func retryable(err error) bool {
	switch ferry.ErrorCode(err) {
	case ferry.ETRANSPORT, ferry.EUNAVAILABLE:
		return true
	}
	return false
}

// indent puts prefix before every line of s.
func indent(s, prefix string) string {
	return prefix + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n"+prefix)
}
