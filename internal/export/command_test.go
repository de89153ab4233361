package export

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/testenv"
)

// commandTests are Procfile commands that must run whole under every
// format. Each writes to $MARK; want is what $MARK must then hold ("PID":
// the pid of the process the init system started, which shows the command
// was exec'd and the program itself is the unit's main process). The
// non-simple ones ran only their first part, or not at all, while every
// command got exec in front of it.
var commandTests = []struct {
	name, command, want string
	exec                bool // one simple command: exec'd, KillMode=mixed
}{
	{"and list", `echo one >>"$MARK" && echo two >>"$MARK"`, "one\ntwo\n", false},
	{"or list", `false || echo fallback >"$MARK"`, "fallback\n", false},
	{"sequence", `echo one >"$MARK"; echo two >>"$MARK"`, "one\ntwo\n", false},
	{"while loop", `i=0; while [ $i -lt 3 ]; do echo $i >>"$MARK"; i=$((i+1)); done`, "0\n1\n2\n", false},
	{"while first", `while [ ! -s "$MARK" ]; do echo looped >"$MARK"; done`, "looped\n", false},
	{"pipe", `printf 'b\na\n' | sort >"$MARK"`, "a\nb\n", false},
	{"subshell", `(echo a; echo b) >"$MARK"`, "a\nb\n", false},
	{"brace group", `{ echo a; echo b; } >"$MARK"`, "a\nb\n", false},
	{"if", `if [ -n "$PORT" ]; then echo "port $PORT" >"$MARK"; fi`, "port 5000\n", false},
	{"assignment first", `GREETING=hi sh -c 'echo "$GREETING" >"$MARK"'`, "hi\n", false},
	{"builtin first", `cd sub && pwd >"$MARK"`, "ROOT/sub\n", false},
	{"command substitution", `printf '%s\n' "$(echo sub) $(printf %s "$SECRET")" >"$MARK"`, "sub " + commandSecret + "\n", false},
	{"background and wait", `echo bg >"$MARK" & wait`, "bg\n", false},
	{"simple command is exec'd", `sh -c 'echo $$ >"$MARK"'`, "PID", true},
	{"quotes", `printf '%s|%s|%s\n' "it's" 'a "b" c' "$SECRET" >"$MARK"`, `it's|a "b" c|` + commandSecret + "\n", true},
	{"percent and dollar signs", `printf '100%% %s %%n %%i $$%s ${X}\n' '%n' "${PORT}" >"$MARK"`, "100% %n %n %i $$5000 ${X}\n", true},
	{"backslashes", `printf '%s\n' 'a\tb\\c' "d\\e" >"$MARK"`, "a\\tb\\\\c\nd\\e\n", true},
	{"comment after the command", `echo "c" >"$MARK" # ; && | not run`, "c\n", true},
	{"redirection of stderr", `sh -c 'echo err >&2' 2>"$MARK"`, "err\n", true},
	{"already exec", `exec sh -c 'echo $$ >"$MARK"'`, "PID", true},
}

// commandSecret comes from the env file: its quotes, $ and backslashes
// reach the command unexpanded.
const commandSecret = `a  b $HOME "q" 'x' \n ` + "`id`"

// TestCommandsRun renders each command in every format, reads the result as
// that init system does — systemd's ExecStart= rules, supervisord's
// configparser and shlex, launchd's ProgramArguments — runs the argv in the
// environment it would get, and checks what the command did.
func TestCommandsRun(t *testing.T) {
	python := testenv.NeedCommand(t, "python3")
	for _, tt := range commandTests {
		t.Run(tt.name, func(t *testing.T) {
			for _, format := range Formats() {
				t.Run(format, func(t *testing.T) {
					dir := t.TempDir()
					root := filepath.Join(dir, "root")
					if err := os.MkdirAll(filepath.Join(root, "sub"), 0o755); err != nil {
						t.Fatal(err)
					}
					mark := filepath.Join(dir, "mark")
					app := &ferry.App{Name: "cmd", Processes: []ferry.Process{{Name: "web", Command: tt.command, Scale: 1}}}
					out := filepath.Join(dir, "units")
					if _, err := Export(format, Options{App: app, Dir: out, Root: root, Env: map[string]string{"MARK": mark, "SECRET": commandSecret}}); err != nil {
						t.Fatal(err)
					}
					// What every init system puts in the environment.
					env := map[string]string{"PATH": "/usr/bin:/bin"}
					var argv []string
					switch format {
					case "systemd":
						unit, err := os.ReadFile(filepath.Join(out, "cmd-web-1.service"))
						if err != nil {
							t.Fatal(err)
						}
						envFile, err := os.ReadFile(filepath.Join(out, "cmd-web-1.env"))
						if err != nil {
							t.Fatal(err)
						}
						for k, v := range parseSystemdEnv(t, string(envFile)) {
							env[k] = v
						}
						if argv, err = systemdExecStart(string(unit), env); err != nil {
							t.Fatalf("%v\n%s", err, unit)
						}
						wantKill := "KillMode=control-group"
						if tt.exec {
							wantKill = "KillMode=mixed"
						}
						if !strings.Contains(string(unit), "\n"+wantKill+"\n") {
							t.Errorf("unit lacks %s:\n%s", wantKill, unit)
						}
					case "supervisord":
						argv = supervisordCommand(t, python, filepath.Join(out, "cmd.conf"), "cmd-web-1")
					case "launchd":
						b, err := os.ReadFile(filepath.Join(out, "cmd.web.1.plist"))
						if err != nil {
							t.Fatal(err)
						}
						d, err := plistDict(b)
						if err != nil {
							t.Fatal(err)
						}
						argv = d.array
					}
					pid := runUnit(t, argv, root, env)
					got, err := os.ReadFile(mark)
					if err != nil {
						t.Fatalf("%q did not write $MARK: %v", argv, err)
					}
					want := strings.ReplaceAll(tt.want, "ROOT", root)
					if want == "PID" {
						want = strconv.Itoa(pid) + "\n"
					}
					if string(got) != want {
						t.Errorf("%q wrote %q, want %q", argv, got, want)
					}
				})
			}
		})
	}
}

// runUnit runs argv as the init system would start it and returns its pid.
func runUnit(t *testing.T, argv []string, dir string, env map[string]string) int {
	t.Helper()
	if len(argv) != 3 || argv[0] != "/bin/sh" || argv[1] != "-c" {
		t.Fatalf("argv %q, want /bin/sh -c SCRIPT", argv)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = []string{}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%q: %v\n%s", argv, err, out.String())
	}
	return cmd.Process.Pid
}

// supervisordCommand reads program's command= from conf as supervisord 4
// does: configparser with inline comments, %-expansion, then shlex.split.
func supervisordCommand(t *testing.T, python, conf, program string) []string {
	t.Helper()
	const script = `
import configparser, json, os, shlex, socket, sys
p = configparser.RawConfigParser(inline_comment_prefixes=(';', '#'), strict=False)
p.read(sys.argv[1])
section = 'program:' + sys.argv[2]
expansions = {'program_name': sys.argv[2], 'process_num': 0, 'group_name': sys.argv[2],
              'numprocs': 1, 'here': os.path.dirname(sys.argv[1]), 'host_node_name': socket.gethostname()}
expansions.update({'ENV_' + k: v for k, v in os.environ.items()})
cmd = p.get(section, 'command') % expansions
json.dump(shlex.split(cmd), sys.stdout)
`
	out, err := exec.Command(python, "-c", script, conf, program).Output()
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			t.Fatalf("python: %v\n%s", err, exit.Stderr)
		}
		t.Fatalf("python: %v", err)
	}
	var argv []string
	if err := json.Unmarshal(out, &argv); err != nil {
		t.Fatal(err)
	}
	return argv
}

// systemdExecStart is the argv systemd 252 starts for the unit's ExecStart=
// line: config_parse_exec (src/core/load-fragment.c) splits the value into
// words with extract_first_word(EXTRACT_UNQUOTE|EXTRACT_CUNESCAPE) — quotes
// anywhere in a word, C escapes inside quotes and out — and resolves the
// %-specifiers of each word; at start replace_env_argv expands $VAR (a word
// of its own, split at white space), ${VAR} (anywhere) and $$ from the
// unit's environment. It fails on what a generated unit must never contain:
// a specifier other than %%, an unknown escape, unbalanced quotes, a
// command prefix or a second command.
func systemdExecStart(unit string, env map[string]string) ([]string, error) {
	var value string
	n := 0
	for _, line := range strings.Split(unit, "\n") {
		if v, ok := strings.CutPrefix(line, "ExecStart="); ok {
			value, n = strings.TrimSpace(v), n+1
		}
	}
	if n != 1 {
		return nil, fmt.Errorf("%d ExecStart= lines, want 1", n)
	}
	var words []string
	for p := value; ; {
		p = strings.TrimLeft(p, sdWhitespace)
		if p == "" {
			break
		}
		if len(words) > 0 {
			if p[0] == ';' && (len(p) == 1 || strings.IndexByte(sdWhitespace, p[1]) >= 0) {
				return nil, errors.New("a ; word starts a second command")
			}
			if strings.HasPrefix(p, `\;`) && (len(p) == 2 || strings.IndexByte(sdWhitespace, p[2]) >= 0) {
				words, p = append(words, ";"), p[2:]
				continue
			}
		}
		w, rest, err := sdWord(p)
		if err != nil {
			return nil, err
		}
		if len(words) == 0 && w != "" && strings.IndexByte("@-:+!", w[0]) >= 0 {
			return nil, fmt.Errorf("the command starts with the prefix %q", w[0])
		}
		if w, err = sdSpecifiers(w); err != nil {
			return nil, err
		}
		words, p = append(words, w), rest
	}
	if len(words) == 0 {
		return nil, errors.New("empty ExecStart=")
	}
	var argv []string
	for i, w := range words {
		if i > 0 && len(w) > 1 && w[0] == '$' && w[1] != '{' && w[1] != '$' {
			// A variable alone is split at white space (or dropped when unset).
			argv = append(argv, strings.Fields(env[w[1:]])...)
			continue
		}
		argv = append(argv, sdReplaceEnv(w, env))
	}
	return argv, nil
}

const sdWhitespace = " \t\n\r"

// sdWord is extract_first_word with EXTRACT_UNQUOTE|EXTRACT_CUNESCAPE.
func sdWord(p string) (word, rest string, err error) {
	var b strings.Builder
	var quote byte
	for i := 0; i < len(p); {
		c := p[i]
		switch {
		case c == '\\':
			r, n, err := sdUnescape(p[i+1:])
			if err != nil {
				return "", "", fmt.Errorf("%w in %q", err, p)
			}
			b.WriteString(r)
			i += 1 + n
		case quote != 0:
			if c == quote {
				quote = 0
			} else {
				b.WriteByte(c)
			}
			i++
		case c == '\'' || c == '"':
			quote = c
			i++
		case strings.IndexByte(sdWhitespace, c) >= 0:
			return b.String(), p[i:], nil
		default:
			b.WriteByte(c)
			i++
		}
	}
	if quote != 0 {
		return "", "", fmt.Errorf("unbalanced quoting in %q", p)
	}
	return b.String(), "", nil
}

// sdUnescape is cunescape_one (src/basic/escape.c): s follows a backslash;
// it returns the text and how many bytes of s the escape took.
func sdUnescape(s string) (string, int, error) {
	if s == "" {
		return "", 0, errors.New("a trailing backslash")
	}
	if r, ok := map[byte]string{'a': "\a", 'b': "\b", 'f': "\f", 'n': "\n", 'r': "\r", 't': "\t", 'v': "\v",
		'\\': `\`, '"': `"`, '\'': "'", 's': " "}[s[0]]; ok {
		return r, 1, nil
	}
	num := func(digits string, base, bits int) (uint64, error) {
		if len(s) < 1+len(digits) {
			return 0, fmt.Errorf("a short \\%c escape", s[0])
		}
		v, err := strconv.ParseUint(s[1:1+len(digits)], base, bits)
		if err != nil || v == 0 {
			return 0, fmt.Errorf("a bad \\%c escape", s[0])
		}
		return v, nil
	}
	switch c := s[0]; {
	case c == 'x':
		v, err := num("hh", 16, 8)
		return string([]byte{byte(v)}), 3, err
	case c == 'u' || c == 'U':
		digits := "hhhh"
		if c == 'U' {
			digits = "hhhhhhhh"
		}
		v, err := num(digits, 16, 32)
		if err == nil && !utf8.ValidRune(rune(v)) {
			err = errors.New("a \\u escape that is no character")
		}
		return string(rune(v)), 1 + len(digits), err
	case c >= '0' && c <= '7':
		if len(s) < 3 {
			return "", 0, errors.New("a short octal escape")
		}
		v, err := strconv.ParseUint(s[:3], 8, 8)
		if err != nil || v == 0 {
			return "", 0, errors.New("a bad octal escape")
		}
		return string([]byte{byte(v)}), 3, nil
	}
	return "", 0, fmt.Errorf("the unknown escape \\%c (systemd keeps it with a warning)", s[0])
}

// sdSpecifiers resolves unit specifiers; a generated unit may hold %% alone.
func sdSpecifiers(w string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(w); i++ {
		if w[i] != '%' {
			b.WriteByte(w[i])
			continue
		}
		if i+1 < len(w) && w[i+1] == '%' {
			b.WriteByte('%')
			i++
			continue
		}
		return "", fmt.Errorf("the specifier %q in %q would be replaced by systemd", w[i:min(i+2, len(w))], w)
	}
	return b.String(), nil
}

// sdReplaceEnv is replace_env (src/basic/env-util.c) with no flags, as
// ExecStart= uses it: ${NAME} becomes the value, $$ becomes $, and any other
// $ stays as it is.
func sdReplaceEnv(w string, env map[string]string) string {
	const (
		word = iota
		curly
		variable
	)
	var b strings.Builder
	state, start := word, 0
	for i := 0; i < len(w); i++ {
		c := w[i]
		switch state {
		case word:
			if c == '$' {
				state = curly
			}
		case curly:
			switch c {
			case '{':
				b.WriteString(w[start : i-1])
				start, state = i-1, variable
			case '$':
				b.WriteString(w[start:i])
				start, state = i+1, word
			default:
				state = word
			}
		case variable:
			if c == '}' {
				b.WriteString(env[w[start+2:i]])
				start, state = i+1, word
			}
		}
	}
	b.WriteString(w[start:])
	return b.String()
}

// TestSystemdExecStartParser holds the parser above to systemd's documented
// examples (systemd.service(5), "Command lines"), so that a pass of
// TestCommandsRun means what systemd would do.
func TestSystemdExecStartParser(t *testing.T) {
	env := map[string]string{"ONE": "one", "TWO": "two two", "X": "a b"}
	tests := []struct {
		line string
		want []string
	}{
		{`/bin/echo one two`, []string{"/bin/echo", "one", "two"}},
		{`/bin/echo "one two" 'three four'`, []string{"/bin/echo", "one two", "three four"}},
		{`/bin/echo a"b c"d`, []string{"/bin/echo", "ab cd"}},
		{`/bin/echo "a \"b\" \\ \x41 \101 \s\t"`, []string{"/bin/echo", `a "b" \ A A  ` + "\t"}},
		{`/bin/echo 'it\'s'`, []string{"/bin/echo", "it's"}},
		{`/bin/echo $ONE $TWO`, []string{"/bin/echo", "one", "two", "two"}},
		{`/bin/echo ${ONE} "${TWO}" x${X}y`, []string{"/bin/echo", "one", "two two", "xa by"}},
		{`/bin/echo $$ONE "$$" $UNSET a$ONE`, []string{"/bin/echo", "$ONE", "$", "a$ONE"}},
		{`/bin/echo 100%% \;`, []string{"/bin/echo", "100%", ";"}},
	}
	for _, tt := range tests {
		got, err := systemdExecStart("ExecStart="+tt.line+"\n", env)
		if err != nil || strings.Join(got, "\x00") != strings.Join(tt.want, "\x00") {
			t.Errorf("%s: %q %v, want %q", tt.line, got, err, tt.want)
		}
	}
	for _, bad := range []string{`/bin/echo %n`, `/bin/echo "a`, `/bin/echo \q`, `/bin/echo a ; /bin/true`, `-/bin/echo`, `/bin/echo 50%`} {
		if got, err := systemdExecStart("ExecStart="+bad+"\n", env); err == nil {
			t.Errorf("%s: %q, want an error", bad, got)
		}
	}
}

func TestSimpleCommand(t *testing.T) {
	tests := []struct {
		command string
		execd   bool // sh replaces itself with the program
	}{
		{"bin/web", true},
		{`bin/web --listen ":$PORT" 2>&1`, true},
		{`bin/web --port ${PORT:-5000} <&0 >>log`, true},
		{`"while" x`, true},
		{`bin/web # a && b`, true},
		{`find . -exec echo {} +`, true},
		{"exec bin/web", true},
		{"a && b", false},
		{"a || b", false},
		{"a; b", false},
		{"a | b", false},
		{"a & b", false},
		{"a &>log", false},
		{"(a)", false},
		{"{ a; }", false},
		{"! a", false},
		{"while true; do a; done", false},
		{"FOO=1 a", false},
		{"cd dir", false},
		{". ./env", false},
		{"a $(b)", false},
		{"a `b`", false},
		{`a "$(b)"`, false},
		{"a <<EOF", false},
		{`a "unterminated`, false},
		{"", false},
		{"exec a && b", false},
	}
	for _, tt := range tests {
		if got := execd(tt.command); got != tt.execd {
			t.Errorf("execd(%q) = %v, want %v", tt.command, got, tt.execd)
		}
		want := tt.command
		if tt.execd && !strings.HasPrefix(tt.command, "exec ") {
			want = "exec " + tt.command
		}
		if got := runCommand(tt.command); got != want {
			t.Errorf("runCommand(%q) = %q, want %q", tt.command, got, want)
		}
	}
}

// TestSyntaxError: a command sh cannot parse is refused before any file is
// written, with sh's reason, rather than exported into a restart loop.
func TestSyntaxError(t *testing.T) {
	testenv.NeedCommand(t, "sh")
	dir := t.TempDir()
	app := &ferry.App{Name: "bad", Processes: []ferry.Process{{Name: "web", Command: "while true; do bin/web", Scale: 1}}}
	_, err := Export("systemd", Options{App: app, Dir: dir, Root: dir})
	if err == nil || !strings.Contains(err.Error(), "the command of web is not valid sh") || !strings.Contains(err.Error(), "done") {
		t.Fatalf("got %v, want a syntax error naming the process and sh's reason", err)
	}
	if ferry.ErrorCode(err) != ferry.EINVALID {
		t.Errorf("kind %q, want invalid", ferry.ErrorCode(err))
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("files written: %v", entries)
	}
}

// TestAgentUnitExecStart: the agent's own unit quotes its arguments with
// the same rules, so systemd hands ferry exactly the arguments it was given.
func TestAgentUnitExecStart(t *testing.T) {
	o := AgentOptions{Binary: "/usr/local/bin/ferry", Root: "/var/lib/ferry", Desired: `https://example.com/d.yaml?host=a b&x=100%&v=$HOME\"`, Name: `web "1"`}
	unit, err := AgentUnit(o)
	if err != nil {
		t.Fatal(err)
	}
	got, err := systemdExecStart(string(unit), map[string]string{"HOME": "/root"})
	if err != nil {
		t.Fatalf("%v\n%s", err, unit)
	}
	want := []string{o.Binary, "agent", "--root", o.Root, "--desired", o.Desired, "--name", o.Name}
	if strings.Join(got, "\x00") != strings.Join(want, "\x00") {
		t.Errorf("systemd would run %q, want %q", got, want)
	}
}
