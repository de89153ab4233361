package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/client"
	"github.com/ferrydeploy/ferry/internal/agent/supervise"
)

func newStatus(env Env) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "status [APP]",
		Short: "Show hosts × apps: release, processes, health, last error",
		Long: `Status shows what every host's agent last reported, per app: the release
it runs, its processes (running/wanted per process), their health and the
last error, and when the host was last heard from. A host whose heartbeats
stopped is marked LOST.`,
		Example: `  ferry status
  ferry status hello
  ferry status hello -o json`,
		Args: args(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			app := ""
			if len(a) == 1 {
				app = a[0]
			}
			return showFromServer(cmd, env, output,
				func(ctx context.Context, c *client.Client) (api.Status, error) { return c.Status(ctx, app) },
				func(w io.Writer, st api.Status, now time.Time) { printServerStatus(w, st, app, now) })
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}

// showFromServer is the body of a command that reads one thing from the
// server and shows it: as JSON with -o json, else as show writes it.
func showFromServer[T any](cmd *cobra.Command, env Env, output string,
	get func(context.Context, *client.Client) (T, error), show func(io.Writer, T, time.Time)) error {
	if err := checkOutput(output); err != nil {
		return err
	}
	c, err := loadClient(env)
	if err != nil {
		return err
	}
	v, err := get(cmd.Context(), c)
	if err != nil {
		return err
	}
	if output == "json" {
		return writeJSON(env.Stdout, v)
	}
	show(env.Stdout, v, time.Now())
	return nil
}

// printServerStatus writes a row per host and app (only app when set).
func printServerStatus(w io.Writer, st api.Status, app string, now time.Time) {
	if len(st.Hosts) == 0 {
		fmt.Fprintln(w, "no hosts have joined (ferry agent join-token --group GROUP)")
		return
	}
	hosts := slices.Clone(st.Hosts)
	slices.SortFunc(hosts, func(a, b api.Host) int { return strings.Compare(a.Name, b.Name) })
	tw := newTable(w)
	fmt.Fprintln(tw, "HOST\tGROUPS\tAPP\tRELEASE\tPROCESSES\tHEALTH\tLAST ERROR\tLAST SEEN")
	for _, h := range hosts {
		seen := ago(now, h.LastSeen)
		if h.Lost {
			seen = "LOST (" + seen + ")"
		}
		names := slices.Sorted(maps.Keys(h.Apps))
		if app != "" {
			names = slices.DeleteFunc(names, func(n string) bool { return n != app })
		}
		groups := dash(strings.Join(h.Groups, ","))
		if len(names) == 0 {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t-\t%s\n", h.Name, groups, seen)
			continue
		}
		for _, n := range names {
			as := h.Apps[n]
			if as == nil {
				as = &api.AppStatus{}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", h.Name, groups, n, appRelease(as),
				processSummary(as.Processes), healthSummary(as.Processes), dash(oneLine(appError(as))), seen)
		}
	}
	tw.Flush()
}

// appRelease is the release's label (v4) or id, with the app's state when
// it is not running.
func appRelease(as *api.AppStatus) string {
	r := as.Label
	if r == "" {
		r = as.Release
	}
	r = dash(r)
	if as.State != "" && as.State != ferry.AppRunning {
		r += " (" + string(as.State) + ")"
	}
	return r
}

// processSummary is e.g. "web 2/2, worker 0/1": running of wanted.
func processSummary(ps []api.ProcessStatus) string {
	var order []string
	running, total := map[string]int{}, map[string]int{}
	for _, p := range ps {
		if _, ok := total[p.Process]; !ok {
			order = append(order, p.Process)
		}
		total[p.Process]++
		if p.State == supervise.StateRunning {
			running[p.Process]++
		}
	}
	parts := make([]string, len(order))
	for i, n := range order {
		parts[i] = fmt.Sprintf("%s %d/%d", n, running[n], total[n])
	}
	return dash(strings.Join(parts, ", "))
}

// healthSummary is "healthy" when every instance is, else the count of
// unhealthy and unknown ones.
func healthSummary(ps []api.ProcessStatus) string {
	if len(ps) == 0 {
		return "-"
	}
	count := map[ferry.HealthStatus]int{}
	for _, p := range ps {
		count[p.Health]++
	}
	if count[ferry.Healthy] == len(ps) {
		return string(ferry.Healthy)
	}
	var parts []string
	if n := count[ferry.Unhealthy]; n > 0 {
		parts = append(parts, fmt.Sprintf("%d unhealthy", n))
	}
	if n := len(ps) - count[ferry.Healthy] - count[ferry.Unhealthy]; n > 0 {
		parts = append(parts, fmt.Sprintf("%d unknown", n))
	}
	return strings.Join(parts, ", ")
}

// appError is the app's error, else its first process's.
func appError(as *api.AppStatus) string {
	if as.Error != "" {
		return as.Error
	}
	for _, p := range as.Processes {
		if p.LastError != "" {
			return p.Process + ": " + p.LastError
		}
	}
	return ""
}

// ago is how long before now t was, coarsely: 4s ago, 3m ago, 5h ago, or
// the date in now's location for anything older than two days.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	switch {
	case d < time.Second:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return when(now, t)
}

// when is t as a date and time in now's location (the user's, outside
// tests), or "-" when t is zero.
func when(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.In(now.Location()).Format("2006-01-02 15:04")
}

// table is a tabwriter that leaves no blanks at the ends of lines, which
// an empty last column would.
type table struct {
	*tabwriter.Writer
	buf bytes.Buffer
	out io.Writer
}

func newTable(w io.Writer) *table {
	t := &table{out: w}
	t.Writer = tabwriter.NewWriter(&t.buf, 0, 4, 2, ' ', 0)
	return t
}

// Flush writes the table's rows.
func (t *table) Flush() error {
	if err := t.Writer.Flush(); err != nil {
		return err
	}
	for line := range strings.Lines(t.buf.String()) {
		if _, err := io.WriteString(t.out, strings.TrimRight(line, " \n")+"\n"); err != nil {
			return err
		}
	}
	t.buf.Reset()
	return nil
}
