package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/client/clienttest"
	"github.com/ferrydeploy/ferry/internal/agent"
	"github.com/ferrydeploy/ferry/internal/agent/logship"
	"github.com/ferrydeploy/ferry/internal/agent/supervise"
)

func TestTerminalSafe(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"plain text, ünïcode ✓ and a \\ backslash", "plain text, ünïcode ✓ and a \\ backslash"},
		{"a\ttab stays", "a\ttab stays"},
		{"\x1b[31mred\x1b[0m", `\x1b[31mred\x1b[0m`},
		{"\x1b]0;owned\x07title", `\x1b]0;owned\x07title`},
		{"\x1b[2J\x1b[H", `\x1b[2J\x1b[H`},
		{"one\ntwo\r\n", `one\x0atwo\x0d\x0a`},
		{"over\rwrite", `over\x0dwrite`},
		{"back\bspace\x00nul\x7fdel", `back\x08space\x00nul\x7fdel`},
		{"c1 \u009b2J csi, \u0085 nel", `c1 \u009b2J csi, \u0085 nel`},
		{"raw \x9b2J and \xff", `raw \x9b2J and \xff`},
		{"replacement \uFFFD is shown", "replacement \uFFFD is shown"},
	} {
		if got := terminalSafe(tc.in); got != tc.want {
			t.Errorf("terminalSafe(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// A host's error, from its agent, is shown escaped on a terminal too.
func TestLogPrinterErrorOnTerminal(t *testing.T) {
	var b bytes.Buffer
	p := logPrinter{w: &b, tty: true}
	p.print(api.LogLine{Host: "web-1\x1b[2J", Error: "no logs\x1b]0;owned\x07"})
	if got, want := b.String(), `web-1\x1b[2J: no logs\x1b]0;owned\x07`+"\n"; got != want || p.failed != 1 {
		t.Errorf("got %q (%d failed), want %q", got, p.failed, want)
	}
}

// evilLine is what an app may print to rewrite its operator's terminal:
// set the window title, clear the screen, return to the line's start.
const evilLine = "\x1b]0;owned\x07\x1b[2J\x1b[31mred\x1b[0m\tthen\rover"

// TestLogsEscapesOnTerminal runs ferry logs against a real server and an
// agent serving real log files. On a terminal control characters are
// shown escaped, in the line and in the instance's name (taken from the
// log file's); through a pipe, and with -o json, the bytes are the app's.
func TestLogsEscapesOnTerminal(t *testing.T) {
	srv := startServer(t)
	admin := clienttest.Client(t, srv, srv.AdminToken())
	ag := clienttest.Join(t, srv, clienttest.JoinToken(t, admin, "prod"), "web-1")
	if err := ag.Report(t.Context(), api.Report{State: api.HostReport{Host: "web-1", Apps: map[string]*api.AppStatus{
		"hello": {Label: "v1", State: agent.AppRunning, Processes: []api.ProcessStatus{{Process: "web", Instance: 1, State: supervise.StateRunning}}},
	}}}); err != nil {
		t.Fatal(err)
	}
	apps := t.TempDir()
	logs := filepath.Join(apps, "hello", "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		t.Fatal(err)
	}
	stamp := time.Now().UTC().Format(time.RFC3339Nano)
	if err := os.WriteFile(filepath.Join(logs, "web.1.log"), []byte(stamp+" out "+evilLine+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(logs, "\x1b[2Jx.1.log"), []byte(stamp+" out hi\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go logship.Serve(ctx, ag, apps, nil)

	// A terminal, as far as ferry logs can tell.
	logsToTerminal = func(io.Writer) bool { return true }
	t.Cleanup(func() { logsToTerminal = realLogsToTerminal })
	out, errOut, code := runCLIStreams(t, "", "logs", "hello")
	if code != 0 {
		t.Fatalf("logs on a terminal: exit %d\n%s\n%s", code, out, errOut)
	}
	if strings.ContainsAny(out, "\x1b\x07\r") || strings.Count(out, "\n") != 2 {
		t.Errorf("logs on a terminal wrote control characters:\n%q", out)
	}
	for _, want := range []string{
		"web-1 web.1 | " + stamp + ` out \x1b]0;owned\x07\x1b[2J\x1b[31mred\x1b[0m` + "\tthen" + `\x0dover` + "\n",
		`web-1 \x1b[2Jx.1 | ` + stamp + " out hi\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("logs on a terminal:\n%q\nlacks\n%q", out, want)
		}
	}

	// -o json keeps the bytes (JSON escapes them), on a terminal too.
	out, _, code = runCLIStreams(t, "", "logs", "hello", "-o", "json")
	var lines []string
	for _, s := range strings.Split(strings.TrimSpace(out), "\n") {
		var l api.LogLine
		if err := json.Unmarshal([]byte(s), &l); err != nil {
			t.Fatalf("logs -o json: %v: %q", err, s)
		}
		lines = append(lines, l.Instance+" | "+l.Line)
	}
	if code != 0 || !strings.Contains(strings.Join(lines, "\n"), "web.1 | "+stamp+" out "+evilLine) ||
		!strings.Contains(strings.Join(lines, "\n"), "\x1b[2Jx.1 | ") {
		t.Errorf("logs -o json: exit %d, lines %q", code, lines)
	}

	// A pipe, with the real decision: the app's bytes, raw.
	logsToTerminal = realLogsToTerminal
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	piped := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(r)
		piped <- b
	}()
	var stderr bytes.Buffer
	root := testRoot(Env{Stdin: strings.NewReader(""), Stdout: w, Stderr: &stderr})
	root.SetArgs([]string{"logs", "hello"})
	err = root.ExecuteContext(context.Background())
	w.Close()
	got := string(<-piped)
	r.Close()
	if err != nil {
		t.Fatalf("logs into a pipe: %v\n%s", err, stderr.String())
	}
	for _, want := range []string{"web-1 web.1 | " + stamp + " out " + evilLine + "\n", "web-1 \x1b[2Jx.1 | " + stamp + " out hi\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("logs into a pipe:\n%q\nlacks\n%q", got, want)
		}
	}
}

// realLogsToTerminal is logsToTerminal as ferry has it.
var realLogsToTerminal = logsToTerminal

// TestAgentLogsEscapesOnTerminal: ferry agent logs, which reads the log
// files on the host, shows an app's escape sequences escaped on a
// terminal and passes them through to a pipe.
func TestAgentLogsEscapesOnTerminal(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "web.1.log")
	os.WriteFile(path, []byte("2026-12-04T00:00:00Z \x1b]0;pwned\x07\x1b[2Jhi\n"), 0o600)
	for _, tty := range []bool{true, false} {
		logsToTerminal = func(io.Writer) bool { return tty }
		var b bytes.Buffer
		if err := tailAll(t.Context(), []string{path}, 10, false, &b); err != nil {
			t.Fatal(err)
		}
		raw := strings.Contains(b.String(), "\x1b")
		if tty == raw || !strings.Contains(b.String(), "hi") {
			t.Errorf("to a terminal %v: %q", tty, b.String())
		}
	}
	logsToTerminal = realLogsToTerminal
}
