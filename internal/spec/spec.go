// Package spec reads an app's ferry.yaml and Procfile into a ferry.App,
// applying defaults and saying precisely what to fix when the file is wrong.
package spec

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/goccy/go-yaml"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/safeyaml"
)

// File names looked for at the root of an app's source or release.
const (
	FileName     = "ferry.yaml"
	ProcfileName = "Procfile"
)

// Defaults applied where ferry.yaml is silent.
const (
	DefaultKeepReleases = 5
	DefaultStopTimeout  = 10 * time.Second
)

type fileYAML struct {
	App          string                 `yaml:"app"`
	Build        buildYAML              `yaml:"build"`
	Include      []string               `yaml:"include"`
	Exclude      []string               `yaml:"exclude"`
	Processes    map[string]processYAML `yaml:"processes"`
	Hooks        hooksYAML              `yaml:"hooks"`
	Shared       []string               `yaml:"shared"`
	Deploy       deployYAML             `yaml:"deploy"`
	KeepReleases *int                   `yaml:"keep_releases"`
}

type buildYAML struct {
	Go      string `yaml:"go"`
	Command string `yaml:"command"`
}

type processYAML struct {
	Command     string      `yaml:"command"`
	Port        int         `yaml:"port"`
	Upgrade     string      `yaml:"upgrade"`
	Health      *healthYAML `yaml:"health"`
	Scale       *int        `yaml:"scale"`
	StopTimeout string      `yaml:"stop_timeout"`
	User        string      `yaml:"user"`
	Limits      *limitsYAML `yaml:"limits"`
}

type limitsYAML struct {
	NoFile int `yaml:"nofile"`
	NProc  int `yaml:"nproc"`
}

// userRe is what a user: may name: a POSIX-portable user name.
var userRe = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)

type healthYAML struct {
	HTTP        string `yaml:"http"`
	TCP         bool   `yaml:"tcp"`
	Exec        string `yaml:"exec"`
	Status      int    `yaml:"status"`
	Interval    string `yaml:"interval"`
	Timeout     string `yaml:"timeout"`
	Healthy     int    `yaml:"healthy"`
	Unhealthy   int    `yaml:"unhealthy"`
	StartPeriod string `yaml:"start_period"`
}

type hooksYAML struct {
	Pre     []string `yaml:"pre"`
	Post    []string `yaml:"post"`
	Success []string `yaml:"success"`
	Failure []string `yaml:"failure"`
}

type deployYAML struct {
	Strategy      string `yaml:"strategy"`
	Batch         string `yaml:"batch"`
	Canary        int    `yaml:"canary"`
	AutoRollback  *bool  `yaml:"auto_rollback"`
	HealthTimeout string `yaml:"health_timeout"`
}

// Load reads DIR/ferry.yaml and, when it lists no processes, DIR/Procfile.
func Load(dir string) (*ferry.App, error) {
	p := filepath.Join(dir, FileName)
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ferry.Errorf(ferry.EINVALID, "no %s in %s: create one with at least `app: NAME`", FileName, dir)
	} else if err != nil {
		return nil, fmt.Errorf("spec: %w", err)
	}
	pb, err := os.ReadFile(filepath.Join(dir, ProcfileName))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("spec: %w", err)
	}
	app, err := FromFiles(b, pb)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	return app, nil
}

// Parse parses the bytes of a ferry.yaml. Unknown fields are errors, so a
// typo never silently falls back to a default.
func Parse(b []byte) (*ferry.App, error) {
	var f fileYAML
	if err := safeyaml.Unmarshal(b, &f, yaml.Strict()); err != nil {
		return nil, fmt.Errorf("%s", yaml.FormatError(err, false, true))
	}
	var order struct {
		Processes yaml.MapSlice `yaml:"processes"`
	}
	if err := safeyaml.Unmarshal(b, &order); err != nil {
		return nil, err
	}
	app := &ferry.App{
		Name:    f.App,
		Build:   ferry.Build{Go: f.Build.Go, Command: f.Build.Command},
		Include: f.Include,
		Exclude: f.Exclude,
		Hooks:   ferry.Hooks(f.Hooks),
		Shared:  f.Shared,
	}
	if err := ferry.CheckAppName(app.Name); err != nil {
		return nil, fmt.Errorf("app: %w", err)
	}
	if app.Build.Go != "" && app.Build.Command != "" {
		return nil, errors.New("build: set either go or command, not both")
	}
	for _, s := range app.Shared {
		if err := checkRelDir(s); err != nil {
			return nil, fmt.Errorf("shared: %w", err)
		}
	}
	app.KeepReleases = DefaultKeepReleases
	if f.KeepReleases != nil {
		if *f.KeepReleases < 2 {
			return nil, fmt.Errorf("keep_releases: %d is too few; current and previous are always kept, so use 2 or more", *f.KeepReleases)
		}
		app.KeepReleases = *f.KeepReleases
	}
	var err error
	if app.Deploy, err = parseDeploy(f.Deploy); err != nil {
		return nil, err
	}
	for _, item := range order.Processes {
		name := fmt.Sprint(item.Key)
		p, err := parseProcess(name, f.Processes[name])
		if err != nil {
			return nil, err
		}
		app.Processes = append(app.Processes, p)
	}
	return app, nil
}

func parseDeploy(d deployYAML) (ferry.DeployPolicy, error) {
	p := ferry.DeployPolicy{Strategy: "rolling", Batch: "25%", Canary: d.Canary, AutoRollback: true}
	switch d.Strategy {
	case "":
	case "all", "rolling", "canary":
		p.Strategy = d.Strategy
	default:
		return p, fmt.Errorf("deploy.strategy: %q is not one of all, rolling, canary", d.Strategy)
	}
	if d.Batch != "" {
		if err := checkBatch(d.Batch); err != nil {
			return p, fmt.Errorf("deploy.batch: %w", err)
		}
		p.Batch = d.Batch
	}
	if d.AutoRollback != nil {
		p.AutoRollback = *d.AutoRollback
	}
	var err error
	if p.HealthTimeout, err = duration(d.HealthTimeout, 0); err != nil {
		return p, fmt.Errorf("deploy.health_timeout: %w", err)
	}
	return p, nil
}

func checkBatch(s string) error {
	n, pct := strings.CutSuffix(s, "%")
	var v int
	if _, err := fmt.Sscanf(n, "%d", &v); err != nil || fmt.Sprint(v) != n || v < 1 || (pct && v > 100) {
		return fmt.Errorf("%q is not a host count like 2 or a percentage like 25%%", s)
	}
	return nil
}

func parseProcess(name string, y processYAML) (ferry.Process, error) {
	where := "processes." + name
	p := ferry.Process{Name: name, Command: strings.TrimSpace(y.Command), Port: y.Port, Upgrade: y.Upgrade, Scale: 1}
	if err := ferry.CheckProcessName(name); err != nil {
		return p, fmt.Errorf("%s: %w", where, err)
	}
	if p.Command == "" {
		return p, fmt.Errorf("%s.command: missing; say what to run, e.g. `command: bin/%s`", where, name)
	}
	if p.Port < 0 || p.Port > 65535 {
		return p, fmt.Errorf("%s.port: %d is not a TCP port", where, p.Port)
	}
	switch {
	case p.Upgrade == "" && p.Port > 0:
		p.Upgrade = ferry.UpgradeProxy
	case p.Upgrade == "":
		p.Upgrade = ferry.UpgradeStopStart
	case p.Upgrade == ferry.UpgradeStopStart:
	case p.Upgrade == ferry.UpgradeProxy || p.Upgrade == ferry.UpgradeHandoff:
		if p.Port == 0 {
			return p, fmt.Errorf("%s.upgrade: %s needs a port", where, p.Upgrade)
		}
	default:
		return p, fmt.Errorf("%s.upgrade: %q is not one of proxy, handoff, stop-start", where, p.Upgrade)
	}
	if y.Scale != nil {
		if *y.Scale < 0 {
			return p, fmt.Errorf("%s.scale: %d is negative", where, *y.Scale)
		}
		p.Scale = *y.Scale
	}
	var err error
	if p.StopTimeout, err = duration(y.StopTimeout, DefaultStopTimeout); err != nil {
		return p, fmt.Errorf("%s.stop_timeout: %w", where, err)
	}
	if y.Health != nil {
		if p.Health, err = parseHealth(*y.Health); err != nil {
			return p, fmt.Errorf("%s.health: %w", where, err)
		}
	}
	if y.User != "" {
		if !userRe.MatchString(y.User) {
			return p, fmt.Errorf("%s.user: %q is not a user name (lowercase letters, digits, _ and -)", where, y.User)
		}
		p.User = y.User
	}
	if l := y.Limits; l != nil {
		if l.NoFile < 0 || l.NProc < 0 {
			return p, fmt.Errorf("%s.limits: a limit cannot be negative", where)
		}
		p.Limits = ferry.Limits{NoFile: l.NoFile, NProc: l.NProc}
	}
	return p, nil
}

func parseHealth(y healthYAML) (*ferry.Health, error) {
	h := &ferry.Health{HTTP: y.HTTP, TCP: y.TCP, Exec: y.Exec, Status: y.Status, Healthy: y.Healthy, Unhealthy: y.Unhealthy}
	kinds := 0
	for _, set := range []bool{h.HTTP != "", h.TCP, h.Exec != ""} {
		if set {
			kinds++
		}
	}
	if kinds != 1 {
		return nil, errors.New("set exactly one of http, tcp, exec")
	}
	// Without a public port, http and tcp checks go to the instance's own
	// $PORT, which the agent gives every instance.
	if h.HTTP != "" && !strings.HasPrefix(h.HTTP, "/") {
		return nil, fmt.Errorf("http: %q must be a path starting with /", h.HTTP)
	}
	var err error
	if h.Interval, err = duration(y.Interval, 2*time.Second); err != nil {
		return nil, fmt.Errorf("interval: %w", err)
	}
	if h.Timeout, err = duration(y.Timeout, time.Second); err != nil {
		return nil, fmt.Errorf("timeout: %w", err)
	}
	if h.StartPeriod, err = duration(y.StartPeriod, 0); err != nil {
		return nil, fmt.Errorf("start_period: %w", err)
	}
	if h.Healthy == 0 {
		h.Healthy = 1
	}
	if h.Unhealthy == 0 {
		h.Unhealthy = 3
	}
	if h.Healthy < 0 || h.Unhealthy < 0 {
		return nil, errors.New("healthy and unhealthy must be positive")
	}
	return h, nil
}

func duration(s string, def time.Duration) (time.Duration, error) {
	if s == "" {
		return def, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q is not a duration like 500ms, 10s or 2m", s)
	}
	return d, nil
}

func checkRelDir(s string) error {
	c := path.Clean(strings.TrimSuffix(s, "/"))
	if s == "" || path.IsAbs(c) || c == "." || c == ".." || strings.HasPrefix(c, "../") {
		return fmt.Errorf("%q must be a directory inside the release, like log/", s)
	}
	return nil
}

// ParseProcfile parses "name: command" lines; blank lines and # comments are
// skipped. A repeated name is an error.
func ParseProcfile(b []byte) ([]ferry.Process, error) {
	var procs []ferry.Process
	seen := map[string]bool{}
	for i, line := range bytes.Split(b, []byte("\n")) {
		l := strings.TrimSpace(string(line))
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		name, cmd, ok := strings.Cut(l, ":")
		name, cmd = strings.TrimSpace(name), strings.TrimSpace(cmd)
		if !ok || cmd == "" {
			return nil, fmt.Errorf("line %d: %q is not `name: command`", i+1, l)
		}
		if err := ferry.CheckProcessName(name); err != nil {
			return nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		if seen[name] {
			return nil, fmt.Errorf("line %d: process %q is listed twice", i+1, name)
		}
		seen[name] = true
		procs = append(procs, ferry.Process{Name: name, Command: cmd, Upgrade: ferry.UpgradeStopStart, Scale: 1, StopTimeout: DefaultStopTimeout})
	}
	return procs, nil
}

// FromFiles builds an app from the bytes of its ferry.yaml and, when that
// lists no processes, its Procfile (nil when there is none), as Load does
// from a directory.
func FromFiles(file, procfile []byte) (*ferry.App, error) {
	if file == nil {
		return nil, ferry.Errorf(ferry.EINVALID, "no %s", FileName)
	}
	app, err := Parse(file)
	if err != nil {
		return nil, ferry.WrapError(ferry.EINVALID, err, "%s", FileName)
	}
	if len(app.Processes) == 0 && procfile != nil {
		procs, err := ParseProcfile(procfile)
		if err != nil {
			return nil, ferry.WrapError(ferry.EINVALID, err, "%s", ProcfileName)
		}
		app.Processes = procs
	}
	return app, nil
}
