package cli

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/client"
)

func newReleases(env Env) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "releases APP",
		Short: "List an app's releases: artifact, config revision, who, when, outcome",
		Long: `Releases lists APP's releases, newest first: the artifact version and
sha256, the config revision, who made it and when, the outcome of its last
deployment, and the groups that run it now.`,
		Example: `  ferry releases hello
  ferry releases hello -o json`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			var groups []api.GroupApp
			get := func(ctx context.Context, c *client.Client) ([]api.Release, error) {
				rs, err := c.Releases(ctx, a[0])
				if err != nil || output == "json" {
					return rs, err
				}
				// Which groups run which release is a nicety: a token that
				// may not list apps still gets the releases.
				if apps, err := c.Apps(ctx); err == nil {
					for _, app := range apps {
						if app.Name == a[0] {
							groups = app.Groups
						}
					}
				}
				return rs, nil
			}
			return showFromServer(cmd, env, output, get, func(w io.Writer, rs []api.Release, now time.Time) {
				printReleases(w, rs, groups, now)
			})
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}

// printReleases writes rs newest first, each with the groups running it.
func printReleases(w io.Writer, rs []api.Release, groups []api.GroupApp, now time.Time) {
	if len(rs) == 0 {
		fmt.Fprintln(w, "no releases yet (ferry deploy APP --to GROUP makes one)")
		return
	}
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b api.Release) int { return b.Number - a.Number })
	tw := newTable(w)
	fmt.Fprintln(tw, "RELEASE\tVERSION\tSHA256\tCONFIG\tBY\tCREATED\tOUTCOME\tRUNNING IN")
	for _, r := range rs {
		var in []string
		for _, g := range groups {
			if g.Release == r.Number {
				in = append(in, g.Group)
			}
		}
		slices.Sort(in)
		fmt.Fprintf(tw, "v%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Number, dash(r.Version), short(r.SHA256),
			configRev(r.ConfigRev), dash(r.By), when(now, r.Created), dash(string(r.Outcome)), dash(strings.Join(in, ",")))
	}
	tw.Flush()
}

func configRev(n int) string {
	if n == 0 {
		return "-"
	}
	return fmt.Sprintf("r%d", n)
}

// short is the first 12 digits of a digest, as git shows commits.
func short(sum string) string {
	if len(sum) > 12 {
		return sum[:12]
	}
	return dash(sum)
}

func newHistory(env Env) *cobra.Command {
	var (
		output string
		limit  int
	)
	cmd := &cobra.Command{
		Use:   "history",
		Short: "Show the audit log: who changed what, when, from where",
		Long: `History prints the server's audit events, oldest first: every publish,
deploy, rollback, promote, token and lock change, with who made it and from
which address.`,
		Example: `  ferry history
  ferry history -n 200
  ferry history -o json`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			get := func(ctx context.Context, c *client.Client) ([]api.AuditEvent, error) {
				evs, err := c.Audit(ctx, limit)
				return lastEvents(evs, limit), err
			}
			return showFromServer(cmd, env, output, get, printAudit)
		},
	}
	cmd.Flags().IntVarP(&limit, "limit", "n", 50, "show the newest N events (0: all)")
	addOutputFlag(cmd, &output)
	return cmd
}

// lastEvents is the newest n of evs, oldest first.
func lastEvents(evs []api.AuditEvent, n int) []api.AuditEvent {
	evs = slices.Clone(evs)
	slices.SortStableFunc(evs, func(a, b api.AuditEvent) int { return a.Time.Compare(b.Time) })
	if n > 0 && len(evs) > n {
		evs = evs[len(evs)-n:]
	}
	return evs
}

func printAudit(w io.Writer, evs []api.AuditEvent, now time.Time) {
	if len(evs) == 0 {
		fmt.Fprintln(w, "no events")
		return
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "TIME\tWHO\tFROM\tACTION\tTARGET\tDETAIL")
	for _, e := range evs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.Time.In(now.Location()).Format("2006-01-02 15:04:05"),
			dash(e.Who), dash(e.From), e.Action, dash(e.Target), oneLine(e.Detail))
	}
	tw.Flush()
}
