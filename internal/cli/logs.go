package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/client"
	"github.com/ferrydeploy/ferry/internal/devrun"
)

func newLogs(env Env) *cobra.Command {
	var (
		q      client.LogQuery
		output string
	)
	cmd := &cobra.Command{
		Use:   "logs APP [--host H] [--process P] [-f] [--since 10m]",
		Short: "Show an app's process logs from the hosts that run it",
		Long: `Logs asks the agents of the hosts that run APP, through the server, for the
last lines of each process instance's log and prints them, each prefixed with
host and instance ("web-1 web.1 | …"). Lines start with their time (UTC) and
stream: out, err, or ferry for the agent's own notes. -f keeps printing new
lines until Ctrl-C; --since keeps only recent lines. A host whose agent does
not answer within 10 seconds is reported, not waited for.

On a terminal, control characters in the lines (and in host and instance
names) are shown escaped, ESC as \x1b, so an app's output cannot rewrite
the terminal; piped, or with -o json, the bytes are kept.`,
		Example: `  ferry logs hello
  ferry logs hello --host web-1 --process web -n 200
  ferry logs hello -f
  ferry logs hello --since 10m -o json
  ferry logs hello --hooks --host web-1   # the hooks' output there: why npm ci failed`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if q.Lines < -1 {
				return usageError{fmt.Errorf("-n %d: a number of lines, -1 for all", q.Lines)}
			}
			q.App = a[0]
			c, err := loadClient(env)
			if err != nil {
				return err
			}
			p := logPrinter{w: env.Stdout, json: output == "json", tty: logsToTerminal(env.Stdout)}
			if err := c.Logs(cmd.Context(), q, p.print); err != nil {
				return err
			}
			if p.failed > 0 && p.lines == 0 {
				return fmt.Errorf("logs: no host answered")
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&q.Host, "host", "", "only this host")
	f.StringVar(&q.Process, "process", "", "only this process's instances")
	f.IntVarP(&q.Lines, "lines", "n", 100, "lines from the end of each instance's log (-1: all)")
	f.DurationVar(&q.Since, "since", 0, "only lines this recent, e.g. 10m")
	f.BoolVarP(&q.Follow, "follow", "f", false, "keep printing new lines")
	f.BoolVar(&q.Hooks, "hooks", false, "the output of the app's hooks (pre, post, success, failure), each deploy after a line naming it")
	addOutputFlag(cmd, &output)
	return cmd
}

// logsToTerminal says whether ferry logs writes to a terminal; a test,
// which has none, replaces it.
var logsToTerminal = devrun.IsTerminal

// logPrinter prints log lines as they come, each with its host and
// instance; a host's error goes to the same stream, marked. On a terminal
// (tty) what the app, or an agent, wrote is shown through terminalSafe.
type logPrinter struct {
	w      io.Writer
	json   bool
	tty    bool
	lines  int
	failed int
}

func (p *logPrinter) print(l api.LogLine) {
	if l.Error != "" {
		p.failed++
	} else {
		p.lines++
	}
	if p.json {
		b, _ := json.Marshal(l)
		p.w.Write(append(b, '\n'))
		return
	}
	if p.tty {
		l.Host, l.Instance, l.Line, l.Error = terminalSafe(l.Host), terminalSafe(l.Instance), terminalSafe(l.Line), terminalSafe(l.Error)
	}
	if l.Error != "" {
		fmt.Fprintf(p.w, "%s: %s\n", l.Host, l.Error)
		return
	}
	fmt.Fprintf(p.w, "%s %s | %s\n", l.Host, l.Instance, l.Line)
}

// terminalSafe is s with what a terminal would act on instead of showing
// written out: C0 controls but tab (ESC as \x1b; CR and LF too, so a line
// stays one line), DEL, C1 controls (U+009B as \u009b) and bytes that are
// not UTF-8 (\xff), which a terminal may take for C1 controls. A
// backslash is kept as it is: "\x1b" in the output may have been those
// four characters, but never moves the cursor.
func terminalSafe(s string) string {
	control := func(r rune) bool { return r != '\t' && (r < 0x20 || 0x7f <= r && r <= 0x9f) }
	if strings.IndexFunc(s, func(r rune) bool { return control(r) || r == utf8.RuneError }) < 0 {
		return s
	}
	var b strings.Builder
	for len(s) > 0 {
		r, n := utf8.DecodeRuneInString(s)
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[0])
		case !control(r):
			b.WriteString(s[:n])
		case r < 0x80:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			fmt.Fprintf(&b, `\u%04x`, r)
		}
		s = s[n:]
	}
	return b.String()
}
