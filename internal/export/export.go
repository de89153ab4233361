// Package export writes an app's processes as units for an init system that
// is not ferry's agent: systemd, supervisord or launchd, the way foreman's
// export does, without foreman's mistake of putting the environment (and so
// the secrets) inline in world-readable unit files. Every instance gets its
// own environment file, mode 0600, that its unit reads.
//
// Render is pure and is what the golden tests check; Export renders, has
// sh check that every command parses, writes every file atomically and removes the files an earlier export of the same
// app and format wrote that this one no longer does (after a scale down).
package export

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/fsutil"
)

// DefaultBasePort is the first PORT handed out, as in foreman.
const DefaultBasePort = 5000

// defaultStopTimeout applies to processes built without spec's defaults.
const defaultStopTimeout = 10 * time.Second

// Options say what to export and where it will live. Paths end up inside
// the generated files, so Dir and Root must be absolute.
type Options struct {
	App      *ferry.App        // Name and Processes are used
	Scale    map[string]int    // overrides Process.Scale; unknown names are an error
	Dir      string            // where the files go, e.g. /etc/systemd/system
	Root     string            // working directory of every process
	User     string            // run the processes as this user ("": the init system's default)
	Env      map[string]string // e.g. from a .env file; PORT and FERRY_APP are set by ferry
	BasePort int               // 0 means DefaultBasePort
	LogDir   string            // launchd only: where stdout and stderr go ("": Root/log)
}

// File is one file an export writes.
type File struct {
	Name  string      // base name inside Options.Dir
	Data  []byte      //
	Mode  fs.FileMode // 0600 for environment files
	Owner string      // chown to this user when running as root ("": leave as is)
}

// Result is what Export did, for the CLI to print.
type Result struct {
	Format  string   `json:"format"`
	App     string   `json:"app"`
	Dir     string   `json:"dir"`
	Written []string `json:"written"`
	Removed []string `json:"removed"`
}

// instance is one running copy of a process: web.1, web.2, worker.1.
type instance struct {
	app     string
	proc    ferry.Process
	n       int // 1-based
	port    int
	env     map[string]string
	envPath string // absolute path of its environment file
}

// renderer turns the planned instances into files. An explicit table, not
// init() registration, so the list of formats is in one place.
type renderer func(o *Options, insts []instance) ([]File, error)

var renderers = map[string]renderer{
	"systemd":     renderSystemd,
	"supervisord": renderSupervisord,
	"launchd":     renderLaunchd,
}

// Formats lists the formats Render and Export accept.
func Formats() []string {
	names := make([]string, 0, len(renderers))
	for n := range renderers {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Render returns the files of an export without touching the disk.
func Render(format string, o Options) ([]File, error) {
	r, ok := renderers[format]
	if !ok {
		return nil, ferry.Errorf(ferry.EINVALID, "export: unknown format %q: use one of %s", format, strings.Join(Formats(), ", "))
	}
	insts, err := plan(format, &o)
	if err != nil {
		return nil, err
	}
	return r(&o, insts)
}

// Export renders the files into o.Dir, each written atomically, then removes
// the files a previous export of the same app and format left that this one
// did not write. Files ferry did not generate are never touched: when one
// is in the way, Export writes nothing and says so.
func Export(format string, o Options) (*Result, error) {
	files, err := Render(format, o)
	if err != nil {
		return nil, err
	}
	for _, p := range o.App.Processes {
		if err := checkSyntax(p.Name, p.Command); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	if err := checkOverwrite(o.Dir, o.App.Name, files); err != nil {
		return nil, err
	}
	res := &Result{Format: format, App: o.App.Name, Dir: o.Dir, Written: []string{}, Removed: []string{}}
	keep := map[string]bool{}
	for _, f := range files {
		p := filepath.Join(o.Dir, f.Name)
		if err := writeFile(p, f); err != nil {
			return res, fmt.Errorf("export: %w", err)
		}
		keep[f.Name] = true
		res.Written = append(res.Written, p)
	}
	removed, err := removeStale(o.Dir, o.App.Name, format, keep)
	res.Removed = append(res.Removed, removed...)
	if err != nil {
		return res, fmt.Errorf("export: %w", err)
	}
	return res, nil
}

// plan checks the options and lays out the instances with their ports and
// environments.
func plan(format string, o *Options) ([]instance, error) {
	if o.App == nil {
		return nil, errors.New("export: no app")
	}
	app := o.App.Name
	// Names become file names, unit names and labels: ferry's app rule
	// keeps them plain.
	if err := ferry.CheckAppName(app); err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	if len(o.App.Processes) == 0 {
		return nil, ferry.Errorf(ferry.EINVALID, "export: app %s has no processes: list them under processes: in ferry.yaml or in a Procfile", app)
	}
	for name := range o.Scale {
		if o.App.Process(name) == nil {
			return nil, ferry.Errorf(ferry.EINVALID, "export: scale: no process %q in app %s (it has %s)", name, app, procNames(o.App))
		}
	}
	for _, p := range []struct{ what, path string }{{"output directory", o.Dir}, {"root", o.Root}, {"log directory", o.LogDir}} {
		if p.path != "" && !filepath.IsAbs(p.path) {
			return nil, ferry.Errorf(ferry.EINVALID, "export: %s %q must be an absolute path", p.what, p.path)
		}
		if err := checkText(p.what, p.path); err != nil {
			return nil, err
		}
	}
	if o.Dir == "" || o.Root == "" {
		return nil, ferry.Errorf(ferry.EINVALID, "export: the output directory and the root are required")
	}
	if err := checkText("user", o.User); err != nil {
		return nil, err
	}
	if o.LogDir == "" {
		o.LogDir = filepath.Join(o.Root, "log")
	}
	base := o.BasePort
	if base == 0 {
		base = DefaultBasePort
	}
	for k, v := range o.Env {
		if err := checkEnv(k, v); err != nil {
			return nil, err
		}
	}
	var insts []instance
	for pi, p := range o.App.Processes {
		scale := p.Scale
		if s, ok := o.Scale[p.Name]; ok {
			scale = s
		}
		if scale < 0 {
			return nil, ferry.Errorf(ferry.EINVALID, "export: scale of %s is negative", p.Name)
		}
		if err := checkText("command of "+p.Name, p.Command); err != nil {
			return nil, err
		}
		if p.StopTimeout <= 0 {
			p.StopTimeout = defaultStopTimeout
		}
		for n := 1; n <= scale; n++ {
			// foreman's numbering, so ports stay stable when another
			// process's scale changes: web.1=5000, web.2=5001, worker.1=5100.
			port := base + 100*pi + n - 1
			if port < 1 || port > 65535 {
				return nil, ferry.Errorf(ferry.EINVALID, "export: PORT %d of %s.%d is not a TCP port: lower the base port or the scale", port, p.Name, n)
			}
			env := make(map[string]string, len(o.Env)+2)
			for k, v := range o.Env {
				env[k] = v
			}
			env["PORT"] = strconv.Itoa(port)
			env["FERRY_APP"] = app
			in := instance{app: app, proc: p, n: n, port: port, env: env}
			in.envPath = filepath.Join(o.Dir, instanceName(format, in)+".env")
			insts = append(insts, in)
		}
	}
	if len(insts) == 0 {
		return nil, ferry.Errorf(ferry.EINVALID, "export: every process of %s has scale 0: nothing to run", app)
	}
	return insts, nil
}

// instanceName is the base name of an instance's files: APP-web-1, or the
// launchd label APP.web.1.
func instanceName(format string, in instance) string {
	if format == "launchd" {
		return fmt.Sprintf("%s.%s.%d", in.app, in.proc.Name, in.n)
	}
	return fmt.Sprintf("%s-%s-%d", in.app, in.proc.Name, in.n)
}

func procNames(a *ferry.App) string {
	var names []string
	for _, p := range a.Processes {
		names = append(names, p.Name)
	}
	return strings.Join(names, ", ")
}

// checkText rejects control characters: none of the three formats can
// carry a newline in a command or path the same way the shell would.
func checkText(what, s string) error {
	if !utf8.ValidString(s) {
		return ferry.Errorf(ferry.EINVALID, "export: %s is not valid UTF-8", what)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return ferry.Errorf(ferry.EINVALID, "export: %s %q contains a control character (newline, tab, …); put multi-line commands in a script", what, s)
		}
	}
	return nil
}

// marker is on the first lines of every file an export writes; removeStale
// deletes only files that carry the marker of the same app and format.
func marker(app, format string) string {
	return fmt.Sprintf("Generated by ferry export (app=%s format=%s).", app, format)
}

const markerNote = "ferry export rewrites or removes this file; change ferry.yaml, not this."

// checkOverwrite refuses to replace a file that no export of this app wrote,
// such as a unit written by hand that happens to have the same name.
func checkOverwrite(dir, app string, files []File) error {
	mark := strings.TrimSuffix(marker(app, ""), ").")
	for _, f := range files {
		p := filepath.Join(dir, f.Name)
		fi, err := os.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		} else if err != nil {
			return fmt.Errorf("export: %w", err)
		}
		head, err := readHead(p, 512)
		if err != nil && fi.Mode().IsRegular() {
			return fmt.Errorf("export: %w", err)
		}
		if !fi.Mode().IsRegular() || !strings.Contains(string(head), mark) {
			return ferry.Errorf(ferry.EINVALID, "export: %s exists and ferry export did not write it: move it away or export to another directory", p)
		}
	}
	return nil
}

func removeStale(dir, app, format string, keep map[string]bool) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	mark := []byte(marker(app, format))
	var removed []string
	for _, e := range entries {
		name := e.Name()
		if keep[name] || !e.Type().IsRegular() || !strings.HasPrefix(name, app) {
			continue
		}
		p := filepath.Join(dir, name)
		head, err := readHead(p, 512)
		if err != nil {
			return removed, err
		}
		if !strings.Contains(string(head), string(mark)) {
			continue
		}
		if err := os.Remove(p); err != nil {
			return removed, err
		}
		removed = append(removed, p)
	}
	if len(removed) > 0 {
		return removed, fsutil.SyncDir(dir)
	}
	return removed, nil
}

func readHead(path string, n int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, n)
	m, err := f.Read(b)
	if err != nil && m == 0 && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return b[:m], nil
}

// writeFile writes f atomically. The owner is set before the rename so the
// file is never visible with the wrong owner.
func writeFile(path string, f File) error {
	w, err := fsutil.Create(path, f.Mode)
	if err != nil {
		return err
	}
	if f.Owner != "" && os.Geteuid() == 0 {
		uid, gid, err := lookupUser(f.Owner)
		if err != nil {
			w.Abort()
			return err
		}
		if err := w.Chown(uid, gid); err != nil {
			w.Abort()
			return err
		}
	}
	if _, err := w.Write(f.Data); err != nil {
		w.Abort()
		return err
	}
	return w.Commit()
}

func lookupUser(name string) (uid, gid int, err error) {
	u, err := user.Lookup(name)
	if err != nil {
		return 0, 0, fmt.Errorf("user %s: %w (create the user first: its processes must read their environment file)", name, err)
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return uid, gid, nil
}

// seconds rounds a stop timeout up to whole seconds, the unit all three
// formats take.
func seconds(d time.Duration) int {
	return int((d + time.Second - 1) / time.Second)
}
