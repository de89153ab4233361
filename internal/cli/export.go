package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/joho/godotenv"
	"github.com/spf13/cobra"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/export"
	"github.com/ferrydeploy/ferry/internal/spec"
)

// exportResult is what `ferry export -o json` prints.
type exportResult struct {
	*export.Result
	Next string `json:"next"`
}

func newExport(env Env) *cobra.Command {
	var (
		opt      export.Options
		appName  string
		appDir   string
		envFiles []string
		scale    string
		output   string
	)
	cmd := &cobra.Command{
		Use:   "export systemd|supervisord|launchd -o DIR",
		Short: "Write systemd, supervisord or launchd units for an app's processes",
		Long: `Export writes one unit per process instance, the way foreman export does, for
hosts that run an app without ferry's agent. Processes come from APPDIR's
ferry.yaml or, failing that, its Procfile (then -a names the app); -m
overrides their scale.

Each instance gets its environment in its own file, DIR/<instance>.env,
mode 0600, never inline in the world-readable unit: the variables of the
-e files (default APPDIR/.env when it exists), then PORT, foreman-style
(base port + 100 × process index + instance index: web.1=5000, web.2=5001,
worker.1=5100), and FERRY_APP. The port: of ferry.yaml is the agent's
public port and is not used here. Values are double-quoted so systemd's
EnvironmentFile= and sh's "." read them alike; newlines are kept.

  systemd      APP-PROC-N.service per instance and APP.target, which wants
               them all; Restart=always, TimeoutStopSec= the process's
               stop_timeout, logs to the journal
  supervisord  APP.conf: [program:APP-PROC-N] per instance and [group:APP];
               each runs /bin/sh, which sources the env file and runs the
               command (supervisord cannot read an env file itself)
  launchd      APP.PROC.N.plist per instance, with the same sh wrapper

Commands are sh, as in a Procfile: each runs under /bin/sh -c. One simple
command (bin/web --port $PORT 2>&1) is exec'd, so the program is the unit's
main process and gets SIGTERM itself (systemd: KillMode=mixed); anything
else (a && b, a | b, a loop, FOO=1 prog) runs as the script it is, and stop
signals every process of the unit (KillMode=control-group; supervisord's
stopasgroup). A command sh cannot parse stops the export. Every file
is written atomically. Files of an earlier export of the same app and format
that this one does not write (after a scale down) are removed; other files
in DIR are never touched, and one that is in the way of a file to write
stops the export before anything is written. As root, the env files of supervisord and launchd
are chowned to --user, who reads them.`,
		Example: `  ferry export systemd -o /etc/systemd/system --user hello -e /etc/hello.env
  ferry export supervisord -d ./hello -o /etc/supervisor/conf.d -m web=2,worker=1
  ferry export launchd -a hello -o ~/Library/LaunchAgents -p 8000 --output json`,
		Args:      args(cobra.ExactArgs(1)),
		ValidArgs: export.Formats(),
		RunE: func(cmd *cobra.Command, a []string) error {
			format := a[0]
			if err := checkOutput(output); err != nil {
				return err
			}
			if !contains(export.Formats(), format) {
				return usageError{fmt.Errorf("unknown format %q: use one of %s", format, strings.Join(export.Formats(), ", "))}
			}
			if opt.Dir == "" {
				return usageError{errors.New("-o DIR is required: where to write the units")}
			}
			app, err := loadExportApp(appDir, appName)
			if err != nil {
				return err
			}
			if opt.Scale, err = parseScale(scale, app); err != nil {
				return usageError{fmt.Errorf("-m: %w", err)}
			}
			if opt.Env, err = readEnvFiles(appDir, envFiles, cmd.Flags().Changed("env")); err != nil {
				return err
			}
			opt.App = app
			if opt.Root == "" {
				opt.Root = appDir
			}
			for _, p := range []*string{&opt.Dir, &opt.Root, &opt.LogDir} {
				if *p != "" {
					if *p, err = filepath.Abs(*p); err != nil {
						return fmt.Errorf("export: %w", err)
					}
				}
			}
			res, err := export.Export(format, opt)
			if err != nil {
				return err
			}
			out := exportResult{Result: res, Next: exportNext(format, res)}
			if output == "json" {
				return writeJSON(env.Stdout, out)
			}
			for _, p := range res.Written {
				fmt.Fprintf(env.Stdout, "wrote   %s\n", p)
			}
			for _, p := range res.Removed {
				fmt.Fprintf(env.Stdout, "removed %s\n", p)
			}
			fmt.Fprintf(env.Stdout, "next: %s\n", out.Next)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&appName, "app", "a", "", "app name (default: app: of ferry.yaml; required with a Procfile alone)")
	f.StringVarP(&opt.Dir, "out", "o", "", "directory to write the files to (required)")
	f.StringVarP(&opt.User, "user", "u", "", "run the processes as this user")
	f.StringVarP(&opt.Root, "root", "r", "", "working directory of the processes (default: APPDIR's absolute path)")
	f.StringVarP(&appDir, "app-dir", "d", ".", "directory with the app's ferry.yaml or Procfile")
	f.StringSliceVarP(&envFiles, "env", "e", nil, "environment file(s) to read (default APPDIR/.env when it exists)")
	f.StringVarP(&scale, "formation", "m", "", "instances per process, e.g. web=2,worker=1 or all=1 (default: scale: of ferry.yaml, else 1)")
	f.IntVarP(&opt.BasePort, "port", "p", export.DefaultBasePort, "first PORT; process i, instance n gets port+100×i+n-1")
	f.StringVar(&opt.LogDir, "log-dir", "", "launchd: directory for stdout and stderr logs (default ROOT/log)")
	// -o is the directory, as in the issue that asked for this command, so
	// the output format is --output alone here.
	f.StringVar(&output, "output", "text", "output format: text or json")
	return cmd
}

// loadExportApp reads DIR's ferry.yaml, or a Procfile alone, which foreman
// users have and spec.Load does not accept.
func loadExportApp(dir, name string) (*ferry.App, error) {
	if _, err := os.Stat(filepath.Join(dir, spec.FileName)); err == nil {
		app, err := spec.Load(dir)
		if err != nil {
			return nil, err
		}
		if name != "" {
			app.Name = name
		}
		return app, nil
	}
	p := filepath.Join(dir, spec.ProcfileName)
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ferry.Errorf(ferry.EINVALID, "export: no %s or %s in %s: pass the app's directory with -d", spec.FileName, spec.ProcfileName, dir)
	} else if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	procs, err := spec.ParseProcfile(b)
	if err != nil {
		return nil, ferry.WrapError(ferry.EINVALID, err, "%s", p)
	}
	if name == "" {
		return nil, usageError{fmt.Errorf("-a APP is required: %s has a Procfile but no %s to name the app", dir, spec.FileName)}
	}
	return &ferry.App{Name: name, Processes: procs}, nil
}

// parseScale reads -m web=2,worker=1; all=N sets every process first, so
// all=0,web=1 runs web alone.
func parseScale(s string, app *ferry.App) (map[string]int, error) {
	if s == "" {
		return nil, nil
	}
	scale := map[string]int{}
	var all *int
	for _, item := range strings.Split(s, ",") {
		name, num, ok := strings.Cut(strings.TrimSpace(item), "=")
		n, err := strconv.Atoi(num)
		if !ok || err != nil || n < 0 {
			return nil, fmt.Errorf("%q is not PROCESS=COUNT, like web=2", item)
		}
		if name == "all" {
			all = &n
			continue
		}
		if app.Process(name) == nil {
			var names []string
			for _, p := range app.Processes {
				names = append(names, p.Name)
			}
			return nil, fmt.Errorf("no process %q in %s (it has %s)", name, app.Name, strings.Join(names, ", "))
		}
		scale[name] = n
	}
	if all != nil {
		for _, p := range app.Processes {
			if _, ok := scale[p.Name]; !ok {
				scale[p.Name] = *all
			}
		}
	}
	return scale, nil
}

// readEnvFiles reads the -e files in order, later ones winning; without -e
// it reads APPDIR/.env when there is one, as foreman does.
func readEnvFiles(appDir string, files []string, explicit bool) (map[string]string, error) {
	if !explicit {
		def := filepath.Join(appDir, ".env")
		if _, err := os.Stat(def); err != nil {
			return nil, nil
		}
		files = []string{def}
	}
	env := map[string]string{}
	for _, f := range files {
		m, err := godotenv.Read(f)
		if err != nil {
			return nil, ferry.WrapError(ferry.EINVALID, err, "export: env file %s", f)
		}
		for k, v := range m {
			env[k] = v
		}
	}
	return env, nil
}

// exportNext is the command that makes the init system pick the files up.
func exportNext(format string, res *export.Result) string {
	switch format {
	case "systemd":
		return fmt.Sprintf("systemctl daemon-reload && systemctl enable --now %s.target", res.App)
	case "supervisord":
		return fmt.Sprintf("supervisorctl reread && supervisorctl update %s (with %s/*.conf in supervisord's [include] files)", res.App, res.Dir)
	}
	var plists []string
	for _, p := range res.Written {
		if strings.HasSuffix(p, ".plist") {
			plists = append(plists, p)
		}
	}
	sort.Strings(plists)
	return "launchctl load -w " + strings.Join(plists, " ")
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
