package export

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// secretEnv has every character the two env-file parsers could disagree on.
var secretEnv = map[string]string{
	"PLAIN":     "hello",
	"SPACES":    "  a  b  ",
	"QUOTES":    `it's "quoted"`,
	"DOLLAR":    "$HOME ${PATH} $$",
	"BACKSLASH": `C:\new\table \\ \" \$ \`,
	"BACKTICK":  "`id` $(id)",
	"NEWLINES":  "-----BEGIN KEY-----\nabc\n-----END KEY-----\n",
	"HASH":      "#not a comment ; nor this",
	"EMPTY":     "",
	"UNICODE":   "ünïcödé ✓",
}

func testApp() *ferry.App {
	return &ferry.App{Name: "hello", Processes: []ferry.Process{
		{Name: "web", Command: `bin/hello --listen ":$PORT" 2>&1`, Scale: 2, StopTimeout: 30 * time.Second},
		{Name: "worker", Command: `printf '%s|%s|%s\n' "$PORT" "$FERRY_APP" "$QUOTES" # 100% ; done`, Scale: 1, StopTimeout: 1500 * time.Millisecond},
		{Name: "cron", Command: "bin/cron", Scale: 0},
	}}
}

func TestGolden(t *testing.T) {
	for _, format := range Formats() {
		t.Run(format, func(t *testing.T) {
			files, err := Render(format, Options{
				App: testApp(), Dir: "/etc/ferry-export", Root: "/srv/hello", User: "deploy",
				Env: map[string]string{"DATABASE_URL": "postgres://u:p@db/hello?sslmode=require", "QUOTES": `it's "quoted"`},
			})
			if err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join("testdata", format)
			if *update {
				os.RemoveAll(dir)
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			var names []string
			for _, f := range files {
				names = append(names, f.Name)
				golden := filepath.Join(dir, f.Name)
				if *update {
					if err := os.WriteFile(golden, f.Data, 0o644); err != nil {
						t.Fatal(err)
					}
					continue
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatalf("%v (run go test ./export -update to create it)", err)
				}
				if !bytes.Equal(f.Data, want) {
					t.Errorf("%s differs from %s (go test ./export -update rewrites it):\n%s", f.Name, golden, f.Data)
				}
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != len(files) {
				t.Errorf("%s holds %d files, the export %d: %v", dir, len(entries), len(files), names)
			}
		})
	}
}

func TestPorts(t *testing.T) {
	files, err := Render("systemd", Options{App: testApp(), Dir: "/d", Root: "/r", BasePort: 7000, Scale: map[string]int{"cron": 1}})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"hello-web-1.env": "7000", "hello-web-2.env": "7001", "hello-worker-1.env": "7100", "hello-cron-1.env": "7200"}
	for _, f := range files {
		if port, ok := want[f.Name]; ok {
			if got := parseSystemdEnv(t, string(f.Data))["PORT"]; got != port {
				t.Errorf("%s: PORT=%q, want %s", f.Name, got, port)
			}
			delete(want, f.Name)
		}
	}
	if len(want) != 0 {
		t.Errorf("not written: %v", want)
	}
}

// TestEnvFile checks that sh's "." (what the supervisord and launchd
// wrappers run) and systemd's EnvironmentFile parser both read exactly the
// values that went in, and that the file is private.
func TestEnvFile(t *testing.T) {
	for _, format := range Formats() {
		t.Run(format, func(t *testing.T) {
			dir := t.TempDir()
			if _, err := Export(format, Options{App: testApp(), Dir: dir, Root: dir, Env: secretEnv}); err != nil {
				t.Fatal(err)
			}
			envs, _ := filepath.Glob(filepath.Join(dir, "*.env"))
			if len(envs) != 3 {
				t.Fatalf("env files: %v", envs)
			}
			for _, p := range envs {
				fi, err := os.Stat(p)
				if err != nil {
					t.Fatal(err)
				}
				if fi.Mode().Perm() != 0o600 {
					t.Errorf("%s: mode %v, want 0600", p, fi.Mode().Perm())
				}
				want := map[string]string{"FERRY_APP": "hello"}
				for k, v := range secretEnv {
					want[k] = v
				}
				sh := shellEnv(t, p)
				b, _ := os.ReadFile(p)
				sd := parseSystemdEnv(t, string(b))
				want["PORT"] = sd["PORT"]
				for k, v := range want {
					if sh[k] != v {
						t.Errorf("%s: sh read %s=%q, want %q", filepath.Base(p), k, sh[k], v)
					}
					if sd[k] != v {
						t.Errorf("%s: systemd would read %s=%q, want %q", filepath.Base(p), k, sd[k], v)
					}
				}
				if len(sd) != len(want) {
					t.Errorf("%s: systemd would read %d variables, want %d", filepath.Base(p), len(sd), len(want))
				}
			}
		})
	}
}

// shellEnv sources path the way the wrapper does, in an empty environment.
func shellEnv(t *testing.T, path string) map[string]string {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", `set -a; . "$0"; set +a; exec env -0`, path)
	cmd.Env = []string{}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("sh . %s: %v", path, err)
	}
	env := map[string]string{}
	for _, kv := range strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00") {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	return env
}

// parseSystemdEnv is systemd's EnvironmentFile parser, parse_env_file_internal
// in src/basic/env-file.c (v254), state for state, so the test holds the
// format to what systemd does rather than to what this package meant.
func parseSystemdEnv(t *testing.T, s string) map[string]string {
	t.Helper()
	const (
		preKey = iota
		key
		preValue
		value
		valueEscape
		singleQuote
		doubleQuote
		doubleQuoteEscape
		comment
		commentEscape
	)
	env := map[string]string{}
	state := preKey
	var k, v []byte
	lastKeyWS, lastValueWS := -1, -1
	push := func() {
		if lastKeyWS >= 0 {
			k = k[:lastKeyWS]
		}
		env[string(k)] = string(v)
		k, v = nil, nil
	}
	isWS := func(c byte) bool { return strings.IndexByte(" \t\n\r", c) >= 0 }
	isNL := func(c byte) bool { return c == '\n' || c == '\r' }
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch state {
		case preKey:
			if c == '#' || c == ';' {
				state = comment
			} else if !isWS(c) {
				state, lastKeyWS, k = key, -1, append(k, c)
			}
		case key:
			switch {
			case isNL(c):
				state, k = preKey, nil
			case c == '=':
				state, lastValueWS = preValue, -1
			default:
				if !isWS(c) {
					lastKeyWS = -1
				} else if lastKeyWS < 0 {
					lastKeyWS = len(k)
				}
				k = append(k, c)
			}
		case preValue:
			switch {
			case isNL(c):
				state = preKey
				push()
			case c == '\'':
				state = singleQuote
			case c == '"':
				state = doubleQuote
			case c == '\\':
				state = valueEscape
			case !isWS(c):
				state, v = value, append(v, c)
			}
		case value:
			switch {
			case isNL(c):
				state = preKey
				if lastValueWS >= 0 {
					v = v[:lastValueWS]
				}
				push()
			case c == '\\':
				state, lastValueWS = valueEscape, -1
			default:
				if !isWS(c) {
					lastValueWS = -1
				} else if lastValueWS < 0 {
					lastValueWS = len(v)
				}
				v = append(v, c)
			}
		case valueEscape:
			state = value
			if !isNL(c) {
				v = append(v, c)
			}
		case singleQuote:
			if c == '\'' {
				state = preValue
			} else {
				v = append(v, c)
			}
		case doubleQuote:
			if c == '"' {
				state = preValue
			} else if c == '\\' {
				state = doubleQuoteEscape
			} else {
				v = append(v, c)
			}
		case doubleQuoteEscape:
			state = doubleQuote
			if strings.IndexByte("\"\\`$", c) >= 0 {
				v = append(v, c)
			} else if c != '\n' {
				v = append(v, '\\', c)
			}
		case comment:
			if c == '\\' {
				state = commentEscape
			} else if isNL(c) {
				state = preKey
			}
		case commentEscape:
			if isNL(c) {
				state = preKey
			} else {
				state = comment
			}
		}
	}
	switch state {
	case preValue, value, valueEscape, singleQuote, doubleQuote, doubleQuoteEscape:
		if state == value && lastValueWS >= 0 {
			v = v[:lastValueWS]
		}
		push()
	}
	return env
}

func TestStaleFilesRemoved(t *testing.T) {
	dir := t.TempDir()
	other := &ferry.App{Name: "hello-api", Processes: []ferry.Process{{Name: "web", Command: "bin/api", Scale: 3}}}
	if _, err := Export("systemd", Options{App: other, Dir: dir, Root: dir}); err != nil {
		t.Fatal(err)
	}
	if _, err := Export("launchd", Options{App: testApp(), Dir: dir, Root: dir}); err != nil {
		t.Fatal(err)
	}
	mine := []byte("[Unit]\nDescription=written by hand\n")
	for _, name := range []string{"hello-web-3.service", "hello-notes.txt", "other.service"} {
		if err := os.WriteFile(filepath.Join(dir, name), mine, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// A file ferry did not write is in the way: nothing is written.
	_, err := Export("systemd", Options{App: testApp(), Dir: dir, Root: dir, Scale: map[string]int{"web": 3}})
	if err == nil || !strings.Contains(err.Error(), "hello-web-3.service exists and ferry export did not write it") {
		t.Fatalf("got %v, want a refusal to overwrite hello-web-3.service", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "hello.target")); err == nil {
		t.Fatal("a refused export wrote hello.target")
	}
	os.Remove(filepath.Join(dir, "hello-web-3.service"))
	if _, err := Export("systemd", Options{App: testApp(), Dir: dir, Root: dir, Scale: map[string]int{"web": 3}}); err != nil {
		t.Fatal(err)
	}

	// Scale down: the instances that are gone lose their files.
	res, err := Export("systemd", Options{App: testApp(), Dir: dir, Root: dir, Scale: map[string]int{"web": 1}})
	if err != nil {
		t.Fatal(err)
	}
	var removed []string
	for _, p := range res.Removed {
		removed = append(removed, filepath.Base(p))
	}
	sort.Strings(removed)
	wantRemoved := []string{"hello-web-2.env", "hello-web-2.service", "hello-web-3.env", "hello-web-3.service"}
	if strings.Join(removed, " ") != strings.Join(wantRemoved, " ") {
		t.Errorf("removed %v, want %v", removed, wantRemoved)
	}
	want := []string{
		// this export
		"hello-web-1.env", "hello-web-1.service", "hello-worker-1.env", "hello-worker-1.service", "hello.target",
		// another app whose name starts with this one's
		"hello-api-web-1.env", "hello-api-web-1.service", "hello-api-web-2.env", "hello-api-web-2.service",
		"hello-api-web-3.env", "hello-api-web-3.service", "hello-api.target",
		// the same app in another format
		"hello.web.1.plist", "hello.web.2.plist", "hello.web.2.env", "hello.worker.1.plist",
		// not ferry's
		"hello-notes.txt", "other.service",
	}
	for _, name := range want {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	leftovers, _ := filepath.Glob(filepath.Join(dir, ".*tmp*"))
	if len(leftovers) != 0 {
		t.Errorf("temp files left: %v", leftovers)
	}
}

func TestErrors(t *testing.T) {
	opts := func(change func(*Options)) Options {
		o := Options{App: testApp(), Dir: "/d", Root: "/r"}
		change(&o)
		return o
	}
	tests := []struct {
		name, format string
		opt          Options
		want         string
	}{
		{"bad format", "upstart", opts(func(*Options) {}), `unknown format "upstart": use one of launchd, supervisord, systemd`},
		{"unknown process", "systemd", opts(func(o *Options) { o.Scale = map[string]int{"wbe": 1} }), `no process "wbe" in app hello (it has web, worker, cron)`},
		{"no instances", "systemd", opts(func(o *Options) { o.Scale = map[string]int{"web": 0, "worker": 0} }), "every process of hello has scale 0"},
		{"no processes", "systemd", opts(func(o *Options) { o.App = &ferry.App{Name: "hello"} }), "app hello has no processes"},
		{"bad app name", "systemd", opts(func(o *Options) { o.App.Name = "../etc" }), `"../etc" is not a valid app name`},
		{"app name with a dot", "launchd", opts(func(o *Options) { o.App.Name = "a.b" }), `export: "a.b" is not a valid app name: '.' is not allowed; use lowercase letters, digits, - and _`},
		{"relative dir", "systemd", opts(func(o *Options) { o.Dir = "units" }), `output directory "units" must be an absolute path`},
		{"bad env key", "systemd", opts(func(o *Options) { o.Env = map[string]string{"A-B": "x"} }), `"A-B" is not a valid variable name`},
		{"bad env value", "systemd", opts(func(o *Options) { o.Env = map[string]string{"A": "\xff"} }), "value of A is not valid UTF-8"},
		{"newline in command", "systemd", opts(func(o *Options) { o.App.Processes[0].Command = "a\nb" }), "contains a control character"},
		{"port too high", "systemd", opts(func(o *Options) { o.BasePort = 65500 }), "PORT 65600 of worker.1 is not a TCP port"},
		{"comment in directory", "supervisord", opts(func(o *Options) { o.Root = "/srv/a ;b" }), "would be cut at the ; or #"},
		{"-- in launchd label", "launchd", opts(func(o *Options) { o.App.Name = "a--b" }), "may not contain --"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Render(tt.format, tt.opt)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
			if ferry.ErrorCode(err) != ferry.EINVALID {
				t.Errorf("kind %q, want invalid", ferry.ErrorCode(err))
			}
		})
	}
}

// TestEnvFileOwner: the wrappers read the env file after dropping to
// --user, so as root it must belong to that user; systemd reads it as root.
func TestEnvFileOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown")
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no user nobody")
	}
	uid, _ := strconv.Atoi(u.Uid)
	for format, wantUID := range map[string]int{"supervisord": uid, "launchd": uid, "systemd": 0} {
		dir := t.TempDir()
		if _, err := Export(format, Options{App: testApp(), Dir: dir, Root: dir, User: "nobody"}); err != nil {
			t.Fatal(err)
		}
		envs, _ := filepath.Glob(filepath.Join(dir, "*.env"))
		for _, p := range envs {
			fi, _ := os.Stat(p)
			if got := int(fi.Sys().(*syscall.Stat_t).Uid); got != wantUID {
				t.Errorf("%s: %s owned by uid %d, want %d", format, filepath.Base(p), got, wantUID)
			}
		}
	}
	_, err = Export("launchd", Options{App: testApp(), Dir: t.TempDir(), Root: "/", User: "no-such-user-ferry"})
	if err == nil || !strings.Contains(err.Error(), "create the user first") {
		t.Errorf("unknown user: %v", err)
	}
}
