package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/devrun"
	"github.com/ferrydeploy/ferry/internal/spec"
)

func newRun(env Env) *cobra.Command {
	var (
		dir, procfile, formation, timeout, color string
		envFiles                                 []string
		port                                     int
	)
	cmd := &cobra.Command{
		Use:   "run [PROCESS...]",
		Short: "Run an app's processes locally, foreman-style",
		Long: `Run starts every process of DIR's ferry.yaml (or its Procfile, or the Procfile
named by -f) with sh -c in DIR, and prints their stdout and stderr as one
stream of lines prefixed with the time and the instance (web.1), coloured
when the output is a terminal. PROCESS arguments run only those.

Each process gets the current environment, the .env files (-e; default
DIR/.env when there is one), and PORT, PS, FERRY_APP, FERRY_PROCESS and
FERRY_INSTANCE. PORT is numbered as foreman does: the base port (-p, else
PORT from the environment, else 5000) + 100 × the process's place in the
file + the instance's index from 0: with web then worker in the Procfile,
-m web=2,worker=1 gives web.1 5000, web.2 5001 and worker.1 5100. A ferry.yaml port: is the public port on hosts
and is not used here; neither is scale: (-m sets the counts).

When any process exits, or on Ctrl-C, every process group gets SIGTERM,
then SIGKILL after -t. The exit code is 0 when everything stopped cleanly
and 1 when a process failed: exited non-zero by itself or had to be killed.`,
		Example: `  ferry run
  ferry run -m web=2,worker=1
  ferry run -f Procfile.dev -e .env,.env.local -p 3000 web
  ferry run -m all=1,worker=0 -t 10s`,
		RunE: func(cmd *cobra.Command, names []string) error {
			useColor, err := runColor(color, env)
			if err != nil {
				return err
			}
			stop, err := runTimeout(timeout)
			if err != nil {
				return err
			}
			if procfile != "" && !cmd.Flags().Changed("dir") {
				dir = filepath.Dir(procfile) // foreman's root is the Procfile's directory
			}
			app, err := runApp(dir, procfile)
			if err != nil {
				return err
			}
			procs, err := runFormation(app.Processes, formation, names)
			if err != nil {
				return err
			}
			vars, err := runEnviron(dir, envFiles, cmd.Flags().Changed("env"))
			if err != nil {
				return err
			}
			base, err := runBasePort(port, cmd.Flags().Changed("port"), vars)
			if err != nil {
				return err
			}
			r := &devrun.Runner{
				App: app.Name, Dir: dir, Processes: procs, Env: vars,
				BasePort: base, Timeout: stop, Out: env.Stdout, Color: useColor,
			}
			return r.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVarP(&dir, "dir", "d", ".", "the app's directory: where processes run and ferry.yaml, Procfile and .env are looked for (default: -f's directory)")
	f.StringVarP(&procfile, "procfile", "f", "", "run this Procfile instead of DIR's ferry.yaml or Procfile")
	f.StringSliceVarP(&envFiles, "env", "e", nil, "read these .env files, later ones winning (default DIR/.env when it exists)")
	f.StringVarP(&formation, "formation", "m", "", "how many of each process: web=2,worker=1 runs only those; all=1 is one of each (the default)")
	f.IntVarP(&port, "port", "p", 0, "base port (default $PORT, else 5000)")
	f.StringVarP(&timeout, "timeout", "t", devrun.DefaultTimeout.String(), "how long processes get to stop after SIGTERM before SIGKILL: a duration, or seconds as in foreman")
	f.StringVar(&color, "color", "auto", "colour the prefixes: auto (when the output is a terminal and NO_COLOR is unset), always or never")
	return cmd
}

// runApp reads the processes from procfile when set, else from dir's
// ferry.yaml or Procfile. The app is named by ferry.yaml when there is one,
// else after its directory.
func runApp(dir, procfile string) (*ferry.App, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("run: %w", err)
	}
	app := &ferry.App{Name: filepath.Base(abs)}
	hasYAML := runPathExists(filepath.Join(dir, spec.FileName))
	if hasYAML {
		if app, err = spec.Load(dir); err != nil {
			return nil, err
		}
	}
	if procfile == "" && !hasYAML {
		procfile = filepath.Join(dir, spec.ProcfileName)
		if !runPathExists(procfile) {
			return nil, usageError{fmt.Errorf("no %s or %s in %s: write a Procfile with lines like `web: bin/web --port $PORT`, or name one with -f", spec.FileName, spec.ProcfileName, dir)}
		}
	}
	if procfile != "" {
		b, err := os.ReadFile(procfile)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, usageError{fmt.Errorf("-f %s: no such file", procfile)}
		} else if err != nil {
			return nil, fmt.Errorf("run: %w", err)
		}
		if app.Processes, err = spec.ParseProcfile(b); err != nil {
			return nil, ferry.WrapError(ferry.EINVALID, err, "%s", procfile)
		}
	}
	if len(app.Processes) == 0 {
		return nil, usageError{fmt.Errorf("no processes to run in %s: list them under processes: in %s or in a Procfile", dir, spec.FileName)}
	}
	return app, nil
}

// runFormation applies -m and the PROCESS arguments to procs.
func runFormation(procs []ferry.Process, formation string, names []string) ([]ferry.Process, error) {
	f, err := devrun.ParseFormation(formation)
	if err != nil {
		return nil, usageError{fmt.Errorf("-m: %w", err)}
	}
	if len(names) > 0 {
		if f, err = f.Only(procs, names); err != nil {
			return nil, usageError{err}
		}
	}
	procs, err = f.Apply(procs)
	if err != nil {
		return nil, usageError{fmt.Errorf("-m: %w", err)}
	}
	for _, p := range procs {
		if p.Scale > 0 {
			return procs, nil
		}
	}
	return nil, usageError{errors.New("-m runs no process: give at least one a count above 0")}
}

// runEnviron is the environment every process starts from: ferry's own
// and the .env files. A file named with -e must exist; DIR/.env may not.
func runEnviron(dir string, files []string, named bool) ([]string, error) {
	if !named {
		files = nil
		if def := filepath.Join(dir, ".env"); runPathExists(def) {
			files = []string{def}
		}
	}
	for _, f := range files {
		if !runPathExists(f) {
			return nil, usageError{fmt.Errorf("-e %s: no such file", f)}
		}
	}
	return devrun.Environ(os.Environ(), files...)
}

// runBasePort is -p, else PORT from the environment (.env included), else
// foreman's 5000.
func runBasePort(flag int, set bool, env []string) (int, error) {
	if set {
		if flag < 1 || flag > 65535 {
			return 0, usageError{fmt.Errorf("-p %d is not a TCP port", flag)}
		}
		return flag, nil
	}
	v, ok := devrun.Getenv(env, "PORT")
	if !ok || v == "" {
		return devrun.DefaultBasePort, nil
	}
	p, err := strconv.Atoi(v)
	if err != nil || p < 1 || p > 65535 {
		return 0, usageError{fmt.Errorf("PORT=%q is not a TCP port: fix it or pass -p", v)}
	}
	return p, nil
}

// runTimeout reads -t as a duration, or as whole seconds like foreman's.
func runTimeout(s string) (time.Duration, error) {
	if n, err := strconv.Atoi(s); err == nil && n > 0 {
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, usageError{fmt.Errorf("-t %q is not a duration like 5s or 500ms, or a number of seconds", s)}
	}
	return d, nil
}

func runColor(s string, env Env) (bool, error) {
	switch s {
	case "always":
		return true, nil
	case "never":
		return false, nil
	case "auto":
		return os.Getenv("NO_COLOR") == "" && devrun.IsTerminal(env.Stdout), nil
	}
	return false, usageError{fmt.Errorf("--color %q: use auto, always or never", s)}
}

func runPathExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
