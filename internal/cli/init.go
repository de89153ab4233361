package cli

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/fsutil"
	"github.com/ferrydeploy/ferry/internal/spec"
)

// initResult is what `ferry init -o json` prints.
type initResult struct {
	Path     string `json:"path"`
	Kind     string `json:"kind"` // go, node or python
	App      string `json:"app"`
	Replaced bool   `json:"replaced"` // an existing ferry.yaml was overwritten (--force)
	Content  string `json:"content"`
}

// Project kinds ferry init knows, in the order it looks for them.
const (
	kindGo     = "go"
	kindNode   = "node"
	kindPython = "python"
)

var initKinds = []string{kindGo, kindNode, kindPython}

func newInit(env Env) *cobra.Command {
	var (
		name, kind, output string
		force              bool
	)
	cmd := &cobra.Command{
		Use:   "init [DIR]",
		Short: "Write a commented ferry.yaml for a Go, Node or Python app",
		Long: `Init looks at DIR (default .) and writes DIR/ferry.yaml for what it finds,
with a comment on every line that is not obvious and the optional keys
commented out. The first that matches wins (--kind picks one):

  go      go.mod: build.go is the main package (. or the one under cmd/
          named like the app, else the first), run as bin/NAME; include:
          lists static/, templates/, public/, assets/ and migrations/ when
          they exist, since a Go build packs only the binary
  node    package.json: build.command npm ci --omit=dev (npm install
          without a package-lock.json, with npm run build first when there
          is a build script); web runs scripts.start, or node MAIN
  python  requirements.txt, wsgi.py or app.py: build.command vendors the
          requirements into vendor/ with pip --target; web runs gunicorn on
          127.0.0.1:$PORT with PYTHONPATH=vendor and the WSGI callable it
          finds (wsgi:application, app:app, PROJECT.wsgi:application)

The app is named by --name, else by the module, package or directory name.
Every app gets one web process with a public port (Go 8080, Node 3000,
Python 8000) behind the agent's proxy: the app must listen on $PORT. The
file is checked by the same parser ferry build uses before it is written.
An existing ferry.yaml is left alone unless --force. Every key is described
in docs/ferry-yaml.md.`,
		Example: `  ferry init
  ferry init ./shop --name shop
  ferry init --kind python --force -o json ~/src/blog`,
		Args: args(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			dir := "."
			if len(a) == 1 {
				dir = a[0]
			}
			if kind != "" && !contains(initKinds, kind) {
				return usageError{fmt.Errorf("--kind %q: use one of %s", kind, strings.Join(initKinds, ", "))}
			}
			res, err := initApp(dir, name, kind, force)
			if err != nil {
				return err
			}
			if output == "json" {
				return writeJSON(env.Stdout, res)
			}
			fmt.Fprintf(env.Stdout, "wrote %s (%s app %s)\nnext: ferry build %s\n", res.Path, res.Kind, res.App, dir)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&name, "name", "", "the app's name (default: from go.mod, package.json or the directory)")
	f.StringVar(&kind, "kind", "", "go, node or python (default: detected from the files)")
	f.BoolVar(&force, "force", false, "overwrite an existing ferry.yaml")
	addOutputFlag(cmd, &output)
	return cmd
}

// initApp detects the kind of app in dir and writes its ferry.yaml.
func initApp(dir, name, kind string, force bool) (*initResult, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, ferry.WrapError(ferry.EINVALID, err, "init")
	}
	if !fi.IsDir() {
		return nil, ferry.Errorf(ferry.EINVALID, "init: %s is not a directory", dir)
	}
	out := filepath.Join(dir, spec.FileName)
	_, err = os.Lstat(out)
	exists := err == nil
	if exists && !force {
		return nil, ferry.Errorf(ferry.EINVALID, "init: %s exists: edit it, or pass --force to replace it", out)
	}
	if kind == "" {
		if kind = detectKind(dir); kind == "" {
			return nil, ferry.Errorf(ferry.EINVALID, "init: %s has no go.mod, package.json, requirements.txt, wsgi.py or app.py: pass --kind, or write %s by hand (docs/ferry-yaml.md)", dir, spec.FileName)
		}
	}
	var p *initProject
	switch kind {
	case kindGo:
		p, err = detectGo(dir)
	case kindNode:
		p, err = detectNode(dir)
	default:
		p, err = detectPython(dir)
	}
	if err != nil {
		return nil, err
	}
	if name != "" {
		p.app = name
	}
	if p.web == "" {
		p.web = "bin/" + p.app
	}
	if err := ferry.CheckAppName(p.app); err != nil {
		if name == "" {
			return nil, ferry.WrapError(ferry.EINVALID, err, "init: the app's name from %s (pass --name NAME)", p.nameFrom)
		}
		return nil, ferry.WrapError(ferry.EINVALID, err, "init: --name")
	}
	content := p.render()
	// The file must be one ferry build takes: a failure here is ferry
	// init's bug, and nothing is written.
	if _, err := spec.Parse([]byte(content)); err != nil {
		return nil, fmt.Errorf("init: the generated %s does not parse: %w", spec.FileName, err)
	}
	if err := fsutil.WriteFile(out, []byte(content), 0o644); err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	return &initResult{Path: out, Kind: kind, App: p.app, Replaced: exists, Content: content}, nil
}

// detectKind returns the first kind whose files dir has, or "".
func detectKind(dir string) string {
	has := func(name string) bool {
		_, err := os.Stat(filepath.Join(dir, name))
		return err == nil
	}
	switch {
	case has("go.mod"):
		return kindGo
	case has("package.json"):
		return kindNode
	case has("requirements.txt"), has("wsgi.py"), has("app.py"):
		return kindPython
	}
	return ""
}

// initProject is what ferry init writes, before it is rendered.
type initProject struct {
	kind, app, nameFrom string
	about               string   // what was detected, for the header
	goPkg, buildCommand string   // one of them, or neither
	buildNote           []string // comment lines above build:
	include, exclude    []string
	includeNote         []string
	web                 string // the web process's command
	webNote             []string
	port                int
	notes               []string // things to check, at the top
}

var (
	moduleRe      = regexp.MustCompile(`(?m)^module\s+("?)([^\s"]+)"?\s*$`)
	packageMainRe = regexp.MustCompile(`(?m)^package main\b`)
	majorRe       = regexp.MustCompile(`^v[0-9]+$`)
)

func detectGo(dir string) (*initProject, error) {
	b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		return nil, ferry.WrapError(ferry.EINVALID, err, "init")
	}
	m := moduleRe.FindSubmatch(b)
	if m == nil {
		return nil, ferry.Errorf(ferry.EINVALID, "init: %s has no module line", filepath.Join(dir, "go.mod"))
	}
	module := string(m[2])
	base := path.Base(module)
	if majorRe.MatchString(base) && path.Dir(module) != "." {
		base = path.Base(path.Dir(module)) // example.com/shop/v2 is shop
	}
	p := &initProject{kind: kindGo, app: appName(base), nameFrom: "go.mod's module " + module, port: 8080}
	mains, err := mainPackages(dir)
	if err != nil {
		return nil, err
	}
	if len(mains) == 0 {
		return nil, ferry.Errorf(ferry.EINVALID, "init: module %s in %s has no main package: ferry builds a program (package main), not a library", module, dir)
	}
	pkg := mains[0]
	for _, c := range mains {
		if c == "." || c == "./cmd/"+p.app || c == "./cmd/"+base {
			pkg = c
			break
		}
	}
	p.goPkg = pkg
	if pkg != "." {
		// ferry build names the binary after the package; "." after the
		// app, which --name may still change (see initApp).
		p.web = "bin/" + path.Base(pkg)
	}
	p.about = fmt.Sprintf("a Go module (%s, main package %s)", module, pkg)
	p.buildNote = []string{
		"ferry build runs `go build -trimpath` of this package with",
		"CGO_ENABLED=0 for --os/--arch and packs the binary as bin/NAME.",
	}
	if len(mains) > 1 {
		var others []string
		for _, c := range mains {
			if c != pkg {
				others = append(others, c)
			}
		}
		p.buildNote = append(p.buildNote, "Other main packages here: "+strings.Join(others, ", ")+".")
	}
	for _, d := range []string{"static", "templates", "public", "assets", "migrations"} {
		if fi, err := os.Stat(filepath.Join(dir, d)); err == nil && fi.IsDir() {
			p.include = append(p.include, d+"/")
		}
	}
	p.includeNote = []string{"A Go build packs only the binary, this file and the Procfile:", "list what else the app reads at run time."}
	return p, nil
}

// mainPackages lists the directories of dir that hold package main, as
// ./-relative package paths, "." first, then sorted.
func mainPackages(dir string) ([]string, error) {
	var mains []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		if n := d.Name(); p != dir && (strings.HasPrefix(n, ".") || strings.HasPrefix(n, "_") || n == "vendor" || n == "testdata" || n == "node_modules" || n == "dist") {
			return filepath.SkipDir
		}
		if p != dir {
			if _, err := os.Stat(filepath.Join(p, "go.mod")); err == nil {
				return filepath.SkipDir // another module
			}
		}
		files, _ := filepath.Glob(filepath.Join(p, "*.go"))
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			if b, err := os.ReadFile(f); err == nil && packageMainRe.Match(b) {
				rel, _ := filepath.Rel(dir, p)
				if rel == "." {
					mains = append(mains, ".")
				} else {
					mains = append(mains, "./"+filepath.ToSlash(rel))
				}
				break
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	sort.Slice(mains, func(i, j int) bool { return mains[i] == "." || (mains[j] != "." && mains[i] < mains[j]) })
	return mains, nil
}

func detectNode(dir string) (*initProject, error) {
	pj := filepath.Join(dir, "package.json")
	b, err := os.ReadFile(pj)
	if err != nil {
		return nil, ferry.WrapError(ferry.EINVALID, err, "init")
	}
	var pkg struct {
		Name    string            `json:"name"`
		Main    string            `json:"main"`
		Scripts map[string]string `json:"scripts"`
	}
	if err := json.Unmarshal(b, &pkg); err != nil {
		return nil, ferry.WrapError(ferry.EINVALID, err, "init: %s", pj)
	}
	p := &initProject{kind: kindNode, port: 3000}
	if pkg.Name != "" {
		// @scope/name: the name alone.
		p.app, p.nameFrom = appName(path.Base(pkg.Name)), "package.json's name "+strconv.Quote(pkg.Name)
	} else {
		p.app, p.nameFrom = dirAppName(dir), "the directory's name"
	}
	_, err = os.Stat(filepath.Join(dir, "package-lock.json"))
	install := "npm ci --omit=dev"
	if err != nil {
		install = "npm install --omit=dev"
		p.notes = append(p.notes, "There is no package-lock.json: builds install whatever versions npm picks that day; commit a lock file and use npm ci.")
	}
	p.buildCommand = install
	p.buildNote = []string{"Run by ferry build in this directory; node_modules/ is packed with the", "app, so the hosts need node but neither npm nor the network."}
	if _, ok := pkg.Scripts["build"]; ok {
		// The build script usually needs the dev dependencies, which are
		// pruned once it has run.
		p.buildCommand = strings.TrimSuffix(install, " --omit=dev") + " && npm run build && npm prune --omit=dev"
	}
	p.about = "a Node package (package.json)"
	p.exclude = []string{"*.log", ".env.local"}
	p.includeNote = []string{"Without include:, the whole directory is packed (node_modules/ too),", "except .git, dist/ and what exclude: lists."}
	start := strings.TrimSpace(pkg.Scripts["start"])
	switch {
	case start != "" && strings.HasPrefix(start, "node "):
		p.web = start
		p.webNote = []string{"package.json's scripts.start."}
	case start != "":
		// npm adds node_modules/.bin to PATH for the script.
		p.web = "npm start"
		p.webNote = []string{"package.json's scripts.start (" + start + "), through npm for its PATH."}
	case pkg.Main != "":
		p.web = "node " + pkg.Main
		p.webNote = []string{"package.json's main."}
	default:
		p.web = "node server.js"
		p.webNote = []string{"package.json has neither scripts.start nor main: npm start's default."}
	}
	return p, nil
}

var wsgiCallableRe = regexp.MustCompile(`(?m)^(application|app)\s*(?::[^=\n]*)?=|^def (application|app)\s*\(`)

func detectPython(dir string) (*initProject, error) {
	p := &initProject{kind: kindPython, app: dirAppName(dir), nameFrom: "the directory's name", port: 8000}
	module := ""
	for _, cand := range []string{"wsgi.py", "app.py"} {
		if b, err := os.ReadFile(filepath.Join(dir, cand)); err == nil {
			if m := wsgiCallableRe.FindSubmatch(b); m != nil {
				module = strings.TrimSuffix(cand, ".py") + ":" + string(m[1]) + string(m[2])
				break
			}
		}
	}
	if module == "" {
		// Django: PROJECT/wsgi.py holds application.
		if matches, _ := filepath.Glob(filepath.Join(dir, "*", "wsgi.py")); len(matches) > 0 {
			sort.Strings(matches)
			module = filepath.Base(filepath.Dir(matches[0])) + ".wsgi:application"
		}
	}
	if module == "" {
		module = "app:app"
		p.notes = append(p.notes, "No WSGI callable found in wsgi.py or app.py: set the module:callable gunicorn serves below.")
	}
	p.about = "a Python WSGI app (" + module + ")"
	req, err := os.ReadFile(filepath.Join(dir, "requirements.txt"))
	if err == nil {
		p.buildCommand = "pip install --target vendor -r requirements.txt"
		p.buildNote = []string{
			"Vendors the requirements into vendor/, packed with the app and put on",
			"PYTHONPATH below. Packages with C extensions are built for the build",
			"machine's Python and CPU: build on (or for) the hosts' own.",
		}
		if !regexp.MustCompile(`(?im)^\s*gunicorn\b`).Match(req) {
			p.notes = append(p.notes, "gunicorn is not in requirements.txt: add it, or install it on the hosts (Debian: apt install gunicorn).")
		}
	} else {
		p.notes = append(p.notes, "There is no requirements.txt: the hosts must have the app's packages and gunicorn installed.")
	}
	p.exclude = []string{".venv/", "venv/", "__pycache__/", "*.pyc"}
	p.includeNote = []string{"Without include:, the whole directory is packed (vendor/ too),", "except .git, dist/ and what exclude: lists."}
	// env, not PYTHONPATH=… in front: then the command is one program, and
	// gunicorn (whose master sends READY=1) is the instance's own process.
	p.web = "env PYTHONPATH=vendor python3 -m gunicorn -b 127.0.0.1:$PORT " + module
	p.webNote = []string{"gunicorn's master is the instance; -w sets its workers."}
	return p, nil
}

// appName turns s into an app name where it can: lowercase, and runs of
// other characters made one -.
func appName(s string) string {
	s = strings.ToLower(s)
	s = regexp.MustCompile(`[^a-z0-9_-]+`).ReplaceAllString(s, "-")
	s = strings.Trim(s, "-_")
	if len(s) > ferry.MaxNameLen {
		s = strings.TrimRight(s[:ferry.MaxNameLen], "-_")
	}
	return s
}

func dirAppName(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return ""
	}
	return appName(filepath.Base(abs))
}

// render writes the commented ferry.yaml.
func (p *initProject) render() string {
	var b strings.Builder
	line := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	comments := func(indent string, lines []string) {
		for _, l := range lines {
			line("%s# %s", indent, l)
		}
	}
	line("# ferry.yaml: how ferry builds, installs and runs %s.", p.app)
	comments("", wrap("Written by `ferry init` for "+p.about+".", 72))
	line("# Every key, its default and an example: docs/ferry-yaml.md in ferry's")
	line("# repository (https://github.com/ferrydeploy/ferry/blob/main/docs/ferry-yaml.md).")
	for _, n := range p.notes {
		line("#")
		comments("", wrap("Check: "+n, 72))
	}
	line("app: %s", p.app)
	line("")
	comments("", p.buildNote)
	switch {
	case p.goPkg != "":
		line("build:")
		line("  go: %s", yamlScalar(p.goPkg))
	case p.buildCommand != "":
		line("build:")
		line("  command: %s", yamlScalar(p.buildCommand))
	default:
		line("# No build step: the directory is packed as it is.")
		line("# build:")
		line("#   command: make")
	}
	line("")
	comments("", p.includeNote)
	switch {
	case len(p.include) > 0:
		line("include: %s", yamlList(p.include))
	case p.kind == kindGo:
		line("# include: [static/, templates/]")
	case p.kind == kindNode:
		line("# include: [src/, node_modules/, package.json]")
	default:
		line("# include: [myapp/, wsgi.py, vendor/]")
	}
	line("# rsync-style patterns of what never to pack.")
	if len(p.exclude) > 0 {
		line("exclude: %s", yamlList(p.exclude))
	} else {
		line(`# exclude: ["*.pid", "*.sock"]`)
	}
	line("")
	line("processes:")
	line("  web:")
	line("    # sh, as in a Procfile, run in the release directory. Listen on $PORT:")
	line("    # each instance gets its own port on 127.0.0.1 and the agent proxies")
	line("    # the public port below to the instance that is ready.")
	comments("    ", p.webNote)
	line("    command: %s", yamlScalar(p.web))
	line("    port: %d", p.port)
	line("    # upgrade: proxy       # start new, wait until ready, switch, drain old;")
	line("    #                      # stop-start for an app that holds a lock or a fixed port")
	line("    # health:              # gates every release (default: a TCP connect to $PORT)")
	line("    #   http: /healthz")
	line("    #   interval: 2s")
	line("    #   timeout: 1s")
	line("    #   start_period: 0s")
	line("    # scale: 1             # instances per host")
	line("    # stop_timeout: 10s    # SIGTERM, then SIGKILL after this long")
	line("")
	line("# Run by the agent on each host as a release is installed: sh -c, one")
	line("# after another, stopping at the first failure, with FERRY_APP set and,")
	line("# from post on, FERRY_RELEASE and FERRY_RELEASE_DIR.")
	line("# hooks:")
	line("#   pre: []              # before the release is unpacked")
	line("#   post: []             # in the new release, before it starts: migrations")
	line("#   success: []          # once it runs healthy; the deploy log on stdin")
	line("#   failure: []          # when it failed; the deploy log on stdin")
	line("")
	line("# Directories kept across releases (symlinked to ROOT/apps/APP/shared/).")
	line("# shared: [log/]")
	line("")
	line("# Defaults for ferry deploy; its flags override them.")
	line("# deploy:")
	line("#   strategy: rolling    # all | rolling | canary")
	line("#   batch: 25%%           # hosts at a time: 2, or 25%% of the group")
	line("#   canary: 1            # with strategy: canary")
	line("#   auto_rollback: true")
	line("#   health_timeout: 60s")
	line("")
	line("# Releases kept on each host (at least 2).")
	line("# keep_releases: 5")
	return b.String()
}

// plainScalar is what YAML reads as the same plain string: no leading
// indicator, no ": " or " #", nothing a bool or number could be.
var plainScalar = regexp.MustCompile(`^[A-Za-z0-9./$][A-Za-z0-9./$:=@%+,_ -]*$`)

func yamlScalar(s string) string {
	if plainScalar.MatchString(s) && !strings.Contains(s, ": ") && !strings.HasSuffix(s, ":") && !strings.HasSuffix(s, " ") {
		if _, err := strconv.ParseFloat(s, 64); err != nil && !contains([]string{"true", "false", "yes", "no", "on", "off", "null", "~"}, strings.ToLower(s)) {
			return s
		}
	}
	if !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return "'" + strings.ReplaceAll(s, "'", "''") + "'" // YAML's single quotes: '' is '
	}
	// A JSON string is a YAML double-quoted one, escapes and all.
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(s)
	return strings.TrimSuffix(b.String(), "\n")
}

func yamlList(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = yamlScalar(s)
		if strings.ContainsAny(q[i], ",[]{}") && !strings.HasPrefix(q[i], "'") && !strings.HasPrefix(q[i], `"`) {
			q[i] = "'" + strings.ReplaceAll(s, "'", "''") + "'" // inside [ ], a comma ends a plain item
		}
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// wrap breaks s into lines of at most width characters.
func wrap(s string, width int) []string {
	var lines []string
	cur := ""
	for _, w := range strings.Fields(s) {
		if cur != "" && len(cur)+1+len(w) > width {
			lines = append(lines, cur)
			cur = w
			continue
		}
		cur = strings.TrimSpace(cur + " " + w)
	}
	if cur != "" {
		lines = append(lines, cur)
	}
	return lines
}
