package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferrydeploy/ferry/client"
	"github.com/ferrydeploy/ferry/internal/agent"
	"github.com/ferrydeploy/ferry/internal/agent/logfile"
	"github.com/ferrydeploy/ferry/internal/agent/logship"
	"github.com/ferrydeploy/ferry/internal/signature"
)

// DefaultAgentRoot is where an agent keeps apps, cache and state.
const DefaultAgentRoot = "/var/lib/ferry"

func newAgent(env Env) *cobra.Command {
	var (
		cfg           agent.Config
		logMax, cache string
		maxBandwidth  string
		logLevel      string
		server, join  string
		joinFile      string
		caSHA256      string
		trustedKeys   string
	)
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the host agent: converge this host to its desired state",
		Long: `The agent reads this host's desired state — from the control server (--server;
it joins once with a join token ($FERRY_JOIN_TOKEN or --join-file) and keeps
its credential in ROOT, then follows
changes with blocking queries and reports its state), or from a file
(watched) or an http(s) URL (polled with ETag) — installs each app's release through a content-addressed
cache into ROOT/apps/APP/releases, flips current, and supervises the app's
processes: process groups, restarts with backoff, logs in ROOT/apps/APP/logs,
health checks. A release that fails its health checks within health_timeout
is rejected and the last healthy release comes back.

The public ports belong to the agent's proxy process (ferry __proxy, started
by the agent, listening on ROOT/proxy.sock), which holds their sockets and
proxies them. Stopping the agent (SIGTERM) or killing it leaves the apps and
the proxy process running, so no request is dropped; the next agent adopts
them all (and upgrades the proxy process when its own binary is another).
A port another process listens on is refused, naming that process. SIGHUP
(or ferry agent upgrade) after replacing the ferry binary starts the new
binary and exits once it serves. The desired-state document:

  apps:
    hello:
      artifact: file:///srv/dist/hello-v3-linux-amd64.tar.zst
      sha256: 9f86d081884c7d65…
      env: {LOG_LEVEL: info}
      scale: {web: 2}`,
		Example: `  FERRY_JOIN_TOKEN=JOIN_TOKEN ferry agent --root /var/lib/ferry --server https://deploy.example.com:7400 --ca-sha256 9f86… --name web-1
  ferry agent --server https://deploy.example.com:7400 --join-file /etc/ferry/join.token --ca-sha256 9f86…
  ferry agent --root /var/lib/ferry --desired /etc/ferry/desired.yaml
  ferry agent --root /var/lib/ferry --server https://deploy.example.com:7400 --max-bandwidth 20MB --download-splay 30s
  ferry agent --root /srv/ferry --desired https://deploy.example.com/hosts/web-1.json --poll 10s
  ferry agent status --root /srv/ferry
  ferry agent logs --root /srv/ferry hello --process web -f`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.Desired == "" && server == "" {
				if _, err := os.Stat(filepath.Join(cfg.Root, credentialFile)); err != nil {
					return usageError{fmt.Errorf("give --desired FILE|URL, or --server URL --ca-sha256 HASH with a join token in $FERRY_JOIN_TOKEN or --join-file")}
				}
			}
			if cfg.Desired != "" && server != "" {
				return usageError{fmt.Errorf("--desired and --server exclude each other")}
			}
			if logMax != "" {
				n, err := parseBytes(logMax)
				if err != nil {
					return usageError{fmt.Errorf("--log-max-size: %w", err)}
				}
				cfg.Log.MaxSize = n
			}
			if cache != "" {
				n, err := parseBytes(cache)
				if err != nil {
					return usageError{fmt.Errorf("--cache-max: %w", err)}
				}
				cfg.CacheMax = n
			}
			if maxBandwidth != "" {
				n, err := parseBytes(maxBandwidth)
				if err != nil {
					return usageError{fmt.Errorf("--max-bandwidth: %w", err)}
				}
				cfg.Fetch.MaxBandwidth = n
			}
			var lvl slog.Level
			var err error
			if err = lvl.UnmarshalText([]byte(logLevel)); err != nil {
				return usageError{fmt.Errorf("--log-level %q: use debug, info, warn or error", logLevel)}
			}
			cfg.Logger = slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: lvl}))
			if trustedKeys != "" {
				if cfg.TrustedKeys, err = signature.LoadTrusted(trustedKeys); err != nil {
					return usageError{fmt.Errorf("--trusted-keys: %w", err)}
				}
			}
			var srv *client.Client
			if cfg.Desired == "" {
				jt, err := takeJoinToken(join, joinFile, cfg.Logger)
				if err != nil {
					return err
				}
				if srv, err = serverMode(cmd.Context(), &cfg, server, jt, caSHA256); err != nil {
					return err
				}
			}
			if cfg.Registry == nil {
				cfg.Registry = newRegistry()
			}
			if cfg.Self, err = os.Executable(); err != nil {
				return fmt.Errorf("agent: find the ferry binary: %w", err)
			}
			a, err := agent.New(cfg)
			if err != nil {
				return err
			}
			cfg.Logger.Info("agent starting", "root", cfg.Root, "desired", cfg.Desired, "pid", os.Getpid())
			// SIGHUP after replacing the binary upgrades the agent in place
			// (as nginx and tableflip do); main handles the other signals.
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			go func() {
				for range hup {
					a.Upgrade()
				}
			}()
			if srv != nil {
				// Each server's requests for this host's process logs: a
				// user may ask any of them.
				for _, one := range srv.Each() {
					go logship.Serve(cmd.Context(), one, filepath.Join(cfg.Root, agent.AppsDir), cfg.Logger)
				}
			}
			return a.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Name, "name", "", "this host's name in status (default: the hostname)")
	f.StringVar(&trustedKeys, "trusted-keys", "", "run only releases signed by a key in this file (.pub lines of ferry keygen)")
	f.StringVar(&cfg.Root, "root", DefaultAgentRoot, "directory for apps, cache, logs and state")
	f.StringVar(&cfg.Desired, "desired", "", "desired state: file path or http(s) URL")
	f.StringVar(&server, "server", "", "control server URL (https://HOST:7400); the agent joins it once and keeps its credential in ROOT")
	f.StringVar(&join, "join", "", "join token, needed the first time; visible to every local user in the process list: prefer $"+joinTokenEnv+" or --join-file")
	f.StringVar(&joinFile, "join-file", "", "read the join token from this file (needed the first time; removed once the agent has joined)")
	f.StringVar(&caSHA256, "ca-sha256", "", "sha256 of the server's CA certificate, as ferry server prints it")
	f.DurationVar(&cfg.Poll, "poll", 30*time.Second, "how often to poll a desired-state URL")
	f.StringVar(&logMax, "log-max-size", "10MiB", "rotate a process's log at this size")
	f.IntVar(&cfg.Log.Keep, "log-keep", 5, "rotated log files kept per process instance")
	f.DurationVar(&cfg.HealthTimeout, "health-timeout", time.Minute, "time a new release has to become healthy, unless its ferry.yaml sets deploy.health_timeout")
	f.StringVar(&cache, "cache-max", "5GiB", "artifact cache size")
	f.IntVar(&cfg.Fetch.Retries, "retry", 3, "download retries")
	f.DurationVar(&cfg.Fetch.RetryWait, "retry-wait", 2*time.Second, "wait before the first download retry (doubling)")
	f.StringVar(&maxBandwidth, "max-bandwidth", "", "limit the download rate, e.g. 10MB (per second)")
	f.DurationVar(&cfg.Fetch.Splay, "download-splay", 0, "wait a random time up to this before each download, so a fleet does not start at once (e.g. 30s)")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	cfg.Fetch.Backoff = true
	cmd.AddCommand(newAgentStatus(env), newAgentLogs(env), newAgentInstall(env), newAgentUpgrade(env), newAgentJoinToken(env))
	return cmd
}

func newAgentStatus(env Env) *cobra.Command {
	var root, output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the apps and processes the agent on this host runs",
		Long: `Status asks the running agent (over ROOT/agent.sock) for apps × processes:
release, state, pid, uptime, restarts, health and the last error. When no agent
runs it shows what the last one recorded in ROOT/state.json, and says so.`,
		Example: `  ferry agent status --root /var/lib/ferry
  ferry agent status --root /var/lib/ferry -o json`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			st, live, err := agent.Status(cmd.Context(), root)
			if err != nil {
				return err
			}
			if output == "json" {
				return writeJSON(env.Stdout, st)
			}
			if !live {
				fmt.Fprintf(env.Stderr, "no agent answers on %s; showing %s as the last agent left it\n",
					filepath.Join(root, agent.SocketFile), filepath.Join(root, agent.StateFile))
			}
			printStatus(env.Stdout, st, time.Now())
			return nil
		},
	}
	cmd.Flags().StringVar(&root, "root", DefaultAgentRoot, "the agent's root directory")
	addOutputFlag(cmd, &output)
	return cmd
}

func printStatus(w io.Writer, st *agent.State, now time.Time) {
	if st.Error != "" {
		fmt.Fprintf(w, "desired state: %s\n", st.Error)
	}
	if len(st.Apps) == 0 {
		fmt.Fprintln(w, "no apps")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "APP\tRELEASE\tSTATE\tPROCESS\tPID\tUPTIME\tRESTARTS\tHEALTH\tLAST ERROR")
	for _, name := range slices.Sorted(maps.Keys(st.Apps)) {
		as := st.Apps[name]
		release := as.Release
		if as.Label != "" && release != "" {
			release = as.Label + " (" + release + ")"
		}
		if len(as.Processes) == 0 {
			fmt.Fprintf(tw, "%s\t%s\t%s\t-\t-\t-\t-\t-\t%s\n", name, dash(release), as.State, oneLine(as.Error))
			continue
		}
		for k, p := range as.Processes {
			appCol, relCol, stateCol := name, dash(release), as.State
			if k > 0 {
				appCol, relCol, stateCol = "", "", ""
			}
			pid, up := "-", "-"
			if p.PID > 0 {
				pid = fmt.Sprint(p.PID)
				up = now.Sub(p.Started).Round(time.Second).String()
			}
			procState := fmt.Sprintf("%s.%d", p.Process, p.Instance)
			if p.State != "running" {
				procState += " (" + p.State + ")"
			}
			if p.CrashLoop {
				procState += " crash-looping"
			}
			errCol := p.LastError
			if k == 0 && as.Error != "" {
				errCol = as.Error
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", appCol, relCol, stateCol, procState, pid, up, p.Restarts, p.Health, oneLine(errCol))
		}
	}
	tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// oneLine fits s on one line of at most 120 characters, cutting from the
// middle: an error's cause is at its end ("…: no space left on device").
func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if r := []rune(s); len(r) > 120 {
		s = string(r[:45]) + "…" + string(r[len(r)-74:])
	}
	return s
}

func newAgentLogs(env Env) *cobra.Command {
	var (
		root, process string
		lines         int
		follow        bool
	)
	cmd := &cobra.Command{
		Use:   "logs APP",
		Short: "Show an app's process logs on this host",
		Long: `Logs prints the last lines of each process instance's log
(ROOT/apps/APP/logs/PROCESS.N.log and its rotated files), each line
timestamped and marked out, err or ferry (the agent's own notes: started,
exited, restarting). With -f it keeps printing new lines, across rotations.`,
		Example: `  ferry agent logs --root /var/lib/ferry hello
  ferry agent logs --root /var/lib/ferry hello --process web -n 100 -f`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			dir := filepath.Join(root, agent.AppsDir, a[0], "logs")
			pattern := "*.log"
			if process != "" {
				pattern = process + ".*.log"
			}
			paths, _ := filepath.Glob(filepath.Join(dir, pattern))
			if len(paths) == 0 {
				return fmt.Errorf("no logs for %s in %s", strings.TrimSpace(a[0]+" "+process), dir)
			}
			return tailAll(cmd.Context(), paths, lines, follow, env.Stdout)
		},
	}
	cmd.Flags().StringVar(&root, "root", DefaultAgentRoot, "the agent's root directory")
	cmd.Flags().StringVar(&process, "process", "", "only this process's instances")
	cmd.Flags().IntVarP(&lines, "lines", "n", 50, "lines from the end of each instance's log (-1: all)")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new lines")
	return cmd
}

// tailAll prints the logs at paths, each line prefixed with its instance
// ("web.1 | ") when there are several; with follow, concurrently.
func tailAll(ctx context.Context, paths []string, n int, follow bool, out io.Writer) error {
	var mu sync.Mutex
	// An app's output must not drive the operator's terminal: there,
	// control characters are shown escaped, as ferry logs does.
	tty := logsToTerminal(out)
	writer := func(path string) io.Writer {
		if len(paths) == 1 && !tty {
			return out
		}
		prefix := ""
		if len(paths) > 1 {
			prefix = terminalSafe(strings.TrimSuffix(filepath.Base(path), ".log")) + " | "
		}
		return &prefixWriter{prefix: prefix, out: out, mu: &mu, escape: tty}
	}
	if !follow {
		for _, p := range paths {
			if err := logfile.Tail(ctx, p, n, false, writer(p)); err != nil {
				return err
			}
		}
		return nil
	}
	errs := make(chan error, len(paths))
	for _, p := range paths {
		go func() { errs <- logfile.Tail(ctx, p, n, true, writer(p)) }()
	}
	var first error
	for range paths {
		if err := <-errs; err != nil && first == nil && ctx.Err() == nil {
			first = err
		}
	}
	return first
}

// prefixWriter writes whole lines, each after prefix, holding mu so lines
// of concurrent writers never interleave.
type prefixWriter struct {
	prefix string
	out    io.Writer
	mu     *sync.Mutex
	escape bool // show control characters escaped (terminalSafe)
	buf    []byte
}

func (w *prefixWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		line := w.buf[:i+1]
		if w.escape {
			line = []byte(terminalSafe(string(line[:i])) + "\n")
		}
		w.mu.Lock()
		_, err := fmt.Fprintf(w.out, "%s%s", w.prefix, line)
		w.mu.Unlock()
		w.buf = w.buf[i+1:]
		if err != nil {
			return len(p), err
		}
	}
}

func newAgentUpgrade(env Env) *cobra.Command {
	var root string
	cmd := &cobra.Command{
		Use:   "upgrade",
		Short: "Hand the running agent over to the ferry binary now on disk",
		Long: `Upgrade asks the agent on ROOT to start the ferry binary at its path (replace
the binary first), hand it the apps it supervises, and exit once the new
agent serves. The new agent also hands the proxy process, which holds the
public ports, over to a process of the new binary. The apps keep running and
no request is dropped. Same as sending the agent SIGHUP.`,
		Example: `  install -m 0755 ferry-new /usr/local/bin/ferry && ferry agent upgrade --root /var/lib/ferry`,
		Args:    args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			before, _, _ := agent.Status(cmd.Context(), root)
			if err := agent.RequestUpgrade(cmd.Context(), root); err != nil {
				return err
			}
			deadline := time.Now().Add(90 * time.Second)
			for time.Now().Before(deadline) {
				st, live, err := agent.Status(cmd.Context(), root)
				if err == nil && live && before != nil && st.Agent != before.Agent {
					fmt.Fprintf(env.Stdout, "agent upgraded: pid %d → %d\n", before.Agent, st.Agent)
					return nil
				}
				select {
				case <-cmd.Context().Done():
					return cmd.Context().Err()
				case <-time.After(100 * time.Millisecond):
				}
			}
			return fmt.Errorf("the agent on %s did not come back as a new process within 90s: see its log", root)
		},
	}
	cmd.Flags().StringVar(&root, "root", DefaultAgentRoot, "the agent's root directory")
	return cmd
}
