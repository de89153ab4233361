package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/goccy/go-yaml"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/artifact"
	"github.com/ferrydeploy/ferry/internal/spec"
)

// runFerry runs ferry args… in-process as main does and returns the exit
// code, stdout and stderr.
func runFerry(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := Run(context.Background(), args, Env{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr})
	return code, stdout.String(), stderr.String()
}

// A tiny server in each language: it listens where its ferry.yaml says
// and answers "hello from KIND" on /.
const (
	goServer = `package main

import (
	"fmt"
	"net/http"
	"os"
)

func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "hello from go") })
	if err := http.ListenAndServe("127.0.0.1:"+os.Getenv("PORT"), nil); err != nil {
		panic(err)
	}
}
`
	nodeServer = `require('http').createServer((req, res) => res.end('hello from node')).listen(process.env.PORT, '127.0.0.1')
`
	wsgiApp = `def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'hello from python']
`
	flaskLike = `class App:
    def __call__(self, environ, start_response):
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return [b'hello from python']

app = App()
`
)

func TestInitDetects(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		args  []string
		kind  string
		app   string
		check func(t *testing.T, app *ferry.App)
		serve string // what the web command answers on /, when it is run
		path  []string
	}{
		{
			name:  "go module, main package at the root",
			files: map[string]string{"go.mod": "module example.com/hello\n\ngo 1.22\n", "main.go": goServer},
			kind:  "go", app: "hello",
			check: wantBuild(".", "", "bin/hello", 8080),
		},
		{
			name: "go module, several commands",
			files: map[string]string{"go.mod": "module github.com/acme/Shop/v2\n", "cmd/admin/main.go": "package main\nfunc main() {}\n",
				"cmd/shop/main.go": "package main\nfunc main() {}\n", "internal/x/x.go": "package x\n", "static/app.css": "", "templates/a.html": ""},
			kind: "go", app: "shop",
			check: func(t *testing.T, app *ferry.App) {
				wantBuild("./cmd/shop", "", "bin/shop", 8080)(t, app)
				if strings.Join(app.Include, ",") != "static/,templates/" {
					t.Errorf("include %v, want the static/ and templates/ the directory has", app.Include)
				}
			},
		},
		{
			name:  "go module, --name",
			files: map[string]string{"go.mod": "module example.com/x\n", "main.go": "package main\nfunc main() {}\n"},
			args:  []string{"--name", "edge"},
			kind:  "go", app: "edge",
			check: wantBuild(".", "", "bin/edge", 8080),
		},
		{
			name: "node, scripts.start runs node",
			files: map[string]string{"package.json": `{"name": "@acme/api", "scripts": {"start": "node server.js"}}`,
				"package-lock.json": `{"lockfileVersion": 3}`, "server.js": nodeServer},
			kind: "node", app: "api",
			check: wantBuild("", "npm ci --omit=dev", "node server.js", 3000),
			serve: "hello from node",
		},
		{
			name:  "node, a build script and no lock file",
			files: map[string]string{"package.json": `{"name": "web", "scripts": {"start": "next start", "build": "next build"}}`},
			kind:  "node", app: "web",
			check: wantBuild("", "npm install && npm run build && npm prune --omit=dev", "npm start", 3000),
		},
		{
			name:  "node, main only",
			files: map[string]string{"package.json": `{"main": "index.js"}`, "index.js": nodeServer},
			kind:  "node", app: "app",
			check: wantBuild("", "npm install --omit=dev", "node index.js", 3000),
			serve: "hello from node",
		},
		{
			name:  "python, wsgi.py",
			files: map[string]string{"requirements.txt": "gunicorn==20.1.0\n", "wsgi.py": wsgiApp},
			kind:  "python", app: "app",
			check: wantBuild("", "pip install --target vendor -r requirements.txt", "env PYTHONPATH=vendor python3 -m gunicorn -b 127.0.0.1:$PORT wsgi:application", 8000),
			serve: "hello from python",
			// Debian's gunicorn is Debian's python3's.
			path: []string{"/usr/bin", "/bin"},
		},
		{
			name:  "python, app.py",
			files: map[string]string{"app.py": flaskLike},
			kind:  "python", app: "app",
			check: wantBuild("", "", "env PYTHONPATH=vendor python3 -m gunicorn -b 127.0.0.1:$PORT app:app", 8000),
			serve: "hello from python",
			path:  []string{"/usr/bin", "/bin"},
		},
		{
			name:  "python, a Django project",
			files: map[string]string{"requirements.txt": "django\ngunicorn\n", "mysite/wsgi.py": "application = get_wsgi_application()\n", "manage.py": ""},
			kind:  "python", app: "app",
			check: wantBuild("", "pip install --target vendor -r requirements.txt", "env PYTHONPATH=vendor python3 -m gunicorn -b 127.0.0.1:$PORT mysite.wsgi:application", 8000),
		},
		{
			name:  "go wins over package.json",
			files: map[string]string{"go.mod": "module example.com/app\n", "main.go": "package main\nfunc main() {}\n", "package.json": "{}"},
			kind:  "go", app: "app",
			check: wantBuild(".", "", "bin/app", 8080),
		},
		{
			name:  "--kind picks",
			files: map[string]string{"go.mod": "module example.com/app\n", "main.go": "package main\nfunc main() {}\n", "package.json": `{"main": "x.js"}`},
			args:  []string{"--kind", "node"},
			kind:  "node", app: "app",
			check: wantBuild("", "npm install --omit=dev", "node x.js", 3000),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "app")
			writeTree(t, dir, tt.files)
			code, stdout, stderr := runFerry(t, append([]string{"init", dir, "-o", "json"}, tt.args...)...)
			if code != ExitOK {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			var res initResult
			if err := json.Unmarshal([]byte(stdout), &res); err != nil {
				t.Fatalf("%v: %s", err, stdout)
			}
			written, err := os.ReadFile(filepath.Join(dir, spec.FileName))
			if err != nil {
				t.Fatal(err)
			}
			if res.Kind != tt.kind || res.App != tt.app || res.Path != filepath.Join(dir, spec.FileName) || res.Content != string(written) || res.Replaced {
				t.Errorf("result %+v, want kind %s, app %s and the file's content", res, tt.kind, tt.app)
			}
			// It is what ferry build and the agent read.
			app, err := spec.Load(dir)
			if err != nil {
				t.Fatalf("%v\n%s", err, written)
			}
			if app.Name != tt.app {
				t.Errorf("app %q, want %q", app.Name, tt.app)
			}
			tt.check(t, app)
			// Commented: the optional keys are there to uncomment.
			for _, want := range []string{"# health:", "# hooks:", "# deploy:", "# keep_releases:", "docs/ferry-yaml.md"} {
				if !strings.Contains(string(written), want) {
					t.Errorf("no %q in\n%s", want, written)
				}
			}
			if tt.serve != "" {
				serveCommand(t, dir, app.Processes[0].Command, tt.path, tt.serve)
			}
		})
	}
}

// wantBuild checks the build and the web process of a generated app.
func wantBuild(goPkg, command, web string, port int) func(*testing.T, *ferry.App) {
	return func(t *testing.T, app *ferry.App) {
		t.Helper()
		if app.Build.Go != goPkg || app.Build.Command != command {
			t.Errorf("build %+v, want go %q command %q", app.Build, goPkg, command)
		}
		if len(app.Processes) != 1 {
			t.Fatalf("processes %+v, want web alone", app.Processes)
		}
		p := app.Processes[0]
		if p.Name != "web" || p.Command != web || p.Port != port || p.Upgrade != ferry.UpgradeProxy {
			t.Errorf("web %+v, want command %q on port %d behind the proxy", p, web, port)
		}
	}
}

// TestInitGoBuilds: the ferry.yaml written for a Go module is one ferry
// build packs, and the packed web command starts the server.
func TestInitGoBuilds(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go toolchain")
	}
	dir := filepath.Join(t.TempDir(), "hello")
	writeTree(t, dir, map[string]string{"go.mod": "module example.com/hello\n\ngo 1.21\n", "cmd/hello/main.go": goServer, "static/index.html": "<p>hi</p>"})
	if code, _, stderr := runFerry(t, "init", dir); code != ExitOK {
		t.Fatalf("init: exit %d: %s", code, stderr)
	}
	res, err := artifact.Build(context.Background(), dir, artifact.BuildOptions{OS: runtime.GOOS, Arch: runtime.GOARCH, Version: "v1.0.0", OutDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(res.Meta.Processes, ",") != "web" || res.Meta.App != "hello" {
		t.Errorf("meta %+v", res.Meta)
	}
	f, err := os.Open(res.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rel := t.TempDir()
	if _, err := artifact.Unpack(context.Background(), f, rel, artifact.DefaultLimits); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"bin/hello", "static/index.html", spec.FileName} {
		if _, err := os.Stat(filepath.Join(rel, p)); err != nil {
			t.Errorf("the artifact lacks %s: %v", p, err)
		}
	}
	app, err := spec.Load(rel)
	if err != nil {
		t.Fatal(err)
	}
	serveCommand(t, rel, app.Processes[0].Command, nil, "hello from go")
}

// serveCommand runs command as the agent does (sh -c in dir, with PORT)
// and waits for it to answer want on /.
func serveCommand(t *testing.T, dir, command string, path []string, want string) {
	t.Helper()
	first := strings.Fields(strings.TrimPrefix(command, "env PYTHONPATH=vendor "))[0]
	env := os.Environ()
	if path != nil {
		env = append(env, "PATH="+strings.Join(path, ":"))
	}
	if first == "python3" {
		// The command needs gunicorn in the python3 it finds.
		// Through sh, so python3 is looked up in env's PATH, not the test's.
		check := exec.Command("/bin/sh", "-c", "python3 -c 'import gunicorn'")
		check.Env = env
		if err := check.Run(); err != nil {
			needTool(t, "python3 with gunicorn (Debian: apt install gunicorn)")
		}
	} else if !strings.HasPrefix(first, "bin/") {
		if _, err := exec.LookPath(first); err != nil {
			needTool(t, first)
		}
	}
	port := freeTCPPort(t)
	cmd := exec.Command("/bin/sh", "-c", command)
	cmd.Dir = dir
	cmd.Env = append(env, fmt.Sprintf("PORT=%d", port))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}()
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("%s exited: %v\n%s", command, err, out.String())
		default:
		}
		resp, err := http.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) != want {
				t.Fatalf("%s answered %q, want %q", command, body, want)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer on %s within 30s: %v\n%s", command, url, err, out.String())
		}
		time.Sleep(50 * time.Millisecond) // poll interval, not a wait for state
	}
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// needTool skips when a tool is missing, and fails in CI.
func needTool(t *testing.T, what string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is missing", what)
	}
	t.Skipf("%s is missing", what)
}

func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestInitRefusals(t *testing.T) {
	goMod := map[string]string{"go.mod": "module example.com/hello\n", "main.go": "package main\nfunc main() {}\n"}
	tests := []struct {
		name  string
		files map[string]string
		args  []string
		code  int
		want  string
	}{
		{"nothing to detect", map[string]string{"README": "hi"}, nil, ExitFailure, "has no go.mod, package.json, requirements.txt, wsgi.py or app.py: pass --kind"},
		{"a library", map[string]string{"go.mod": "module example.com/lib\n", "lib.go": "package lib\n"}, nil, ExitFailure, "has no main package"},
		{"bad --name", goMod, []string{"--name", "Hello World"}, ExitFailure, `init: --name: "Hello World" is not a valid app name`},
		{"bad --kind", goMod, []string{"--kind", "rust"}, ExitUsage, `--kind "rust": use one of go, node, python`},
		{"bad package.json", map[string]string{"package.json": "{"}, nil, ExitFailure, "package.json"},
		{"no name to take", map[string]string{"package.json": `{"name": "@acme/---"}`}, nil, ExitFailure, `the app's name from package.json's name "@acme/---"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeTree(t, dir, tt.files)
			code, _, stderr := runFerry(t, append([]string{"init", dir}, tt.args...)...)
			if code != tt.code || !strings.Contains(stderr, tt.want) {
				t.Errorf("exit %d, %q; want exit %d and %q", code, stderr, tt.code, tt.want)
			}
			if _, err := os.Stat(filepath.Join(dir, spec.FileName)); err == nil {
				t.Error("a refused init wrote ferry.yaml")
			}
		})
	}
}

func TestInitOverwrite(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"go.mod": "module example.com/hello\n", "main.go": "package main\nfunc main() {}\n", spec.FileName: "app: mine\n"})
	code, _, stderr := runFerry(t, "init", dir)
	if code != ExitFailure || !strings.Contains(stderr, "ferry.yaml exists: edit it, or pass --force") {
		t.Errorf("exit %d, %q; want a refusal that names --force", code, stderr)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, spec.FileName)); string(b) != "app: mine\n" {
		t.Fatalf("ferry.yaml changed without --force: %s", b)
	}
	code, stdout, stderr := runFerry(t, "init", dir, "--force", "-o", "json")
	if code != ExitOK {
		t.Fatalf("--force: exit %d: %s", code, stderr)
	}
	var res initResult
	if err := json.Unmarshal([]byte(stdout), &res); err != nil || !res.Replaced || res.App != "hello" {
		t.Errorf("--force: %+v %v", res, err)
	}
	if app, err := spec.Load(dir); err != nil || app.Name != "hello" {
		t.Errorf("after --force: %+v %v", app, err)
	}
}

func TestInitHelp(t *testing.T) {
	code, stdout, _ := runFerry(t, "init", "--help")
	for _, want := range []string{"Examples:", "ferry init ./shop --name shop", "--force", "--kind", "go.mod", "package.json", "requirements.txt", "gunicorn", "docs/ferry-yaml.md"} {
		if code != ExitOK || !strings.Contains(stdout, want) {
			t.Errorf("exit %d, no %q in ferry init --help:\n%s", code, want, stdout)
		}
	}
}

// TestRootHelp: ferry --help names every command in its overview, so a
// new command cannot be left out of it.
func TestRootHelp(t *testing.T) {
	root := newRoot(Env{Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: io.Discard})
	i := strings.Index(root.Long, "Commands, by what they are for")
	if i < 0 {
		t.Fatalf("ferry --help has no overview of the commands:\n%s", root.Long)
	}
	overview := root.Long[i:]
	for _, c := range root.Commands() {
		if c.Hidden || c.Name() == "help" || c.Name() == "completion" {
			continue
		}
		names := func(name string) bool {
			return regexp.MustCompile(`[\s(]` + regexp.QuoteMeta(name) + `[\s,)]`).MatchString(overview + "\n")
		}
		if !names(c.Name()) {
			t.Errorf("ferry --help's overview does not name %s", c.Name())
		}
		for _, sub := range c.Commands() {
			if c.Name() == "agent" && !sub.Hidden && !names(sub.Name()) {
				t.Errorf("ferry --help's overview does not name agent %s", sub.Name())
			}
		}
	}
	code, stdout, _ := runFerry(t, "--help")
	for _, want := range []string{"ferry init writes one", "docs/ferry-yaml.md", "deploy", "agent", "export"} {
		if code != ExitOK || !strings.Contains(stdout, want) {
			t.Errorf("exit %d, no %q in ferry --help", code, want)
		}
	}
}

// TestYAMLScalar: what init writes reads back as itself, whatever the
// command or pattern holds.
func TestYAMLScalar(t *testing.T) {
	for _, s := range []string{
		"bin/web", "npm ci && npm run build", "node server.js # comment?", "a: b", "x:", "#x", "it's", "*.log",
		"true", "no", "123", "1e3", "~", "-x", "[a]", "{a}", "a, b", `"q"`, "%PORT%", "@scope", "!tag", "&anchor",
		"tab\there", "line\nbreak", "trailing ", " leading", "", "ünï",
	} {
		var v struct {
			K string   `yaml:"k"`
			L []string `yaml:"l"`
		}
		doc := "k: " + yamlScalar(s) + "\nl: " + yamlList([]string{s, "x"}) + "\n"
		if err := yaml.Unmarshal([]byte(doc), &v); err != nil {
			t.Errorf("%q: %v\n%s", s, err, doc)
			continue
		}
		if v.K != s || len(v.L) != 2 || v.L[0] != s || v.L[1] != "x" {
			t.Errorf("%q read back as %q and %q from\n%s", s, v.K, v.L, doc)
		}
	}
}
