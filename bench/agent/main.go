// Command agent benchmarks `ferry agent` on one host: an idle agent running
// -apps apps of -scale processes each (RSS, CPU time and wakeups over -idle,
// against a `sleep` started at the same moment), then the time from a
// desired-state file change to the new release's processes running and to
// the agent calling the release running. See bench/README.md.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/agent:", err)
		os.Exit(1)
	}
}

// Options are the bench's flags.
type Options struct {
	Ferry    string        `json:"ferry"`
	Idle     time.Duration `json:"idle"`
	Apps     int           `json:"apps"`
	Scale    int           `json:"scale"`
	Changes  int           `json:"changes"`
	Poll     time.Duration `json:"poll"`      // /proc and status poll interval while timing a change
	Settle   time.Duration `json:"settle"`    // pause after a change is running, before the next
	Sample   time.Duration `json:"sample"`    // RSS sampling interval while idle
	AgentEnv []string      `json:"agent_env"` // extra environment for the agent, e.g. GODEBUG=gctrace=1
	Work     string        `json:"work"`
	Keep     bool          `json:"keep"`
}

// Run parses args, runs the benchmark, prints the report to stdout and
// writes the results as JSON to -out.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("agent", flag.ContinueOnError)
	fl.SetOutput(stderr)
	var (
		o        Options
		out      = fl.String("out", "results.json", "write the results as JSON to this file (\"\": don't)")
		agentEnv = fl.String("agent-env", "", "comma-separated KEY=VALUE added to the agent's environment (e.g. GODEBUG=gctrace=1; its log is in the scratch dir with -keep)")
	)
	fl.StringVar(&o.Ferry, "ferry", "", "ferry binary (default: build ./cmd/ferry of this module into the scratch directory)")
	fl.DurationVar(&o.Idle, "idle", 5*time.Minute, "how long to measure the idle agent")
	fl.IntVar(&o.Apps, "apps", 5, "apps the idle agent runs")
	fl.IntVar(&o.Scale, "scale", 2, "process instances per app")
	fl.IntVar(&o.Changes, "changes", 20, "desired-state changes timed per series")
	fl.DurationVar(&o.Poll, "poll", 5*time.Millisecond, "how often /proc and the agent's status are polled while a change is timed")
	fl.DurationVar(&o.Settle, "settle", 250*time.Millisecond, "pause between a change being running and the next change")
	fl.DurationVar(&o.Sample, "sample", time.Second, "RSS sampling interval while idle")
	fl.StringVar(&o.Work, "work", "", "scratch directory (default: a new one under $TMPDIR, removed afterwards)")
	fl.BoolVar(&o.Keep, "keep", false, "keep the scratch directory (agent log, state, app logs)")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if fl.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fl.Args(), " "))
	}
	if o.Apps < 1 || o.Scale < 1 || o.Changes < 1 || o.Idle <= 0 || o.Poll <= 0 || o.Sample <= 0 {
		return fmt.Errorf("-apps, -scale, -changes must be at least 1 and -idle, -poll, -sample positive")
	}
	if *agentEnv != "" {
		o.AgentEnv = strings.Split(*agentEnv, ",")
	}
	var err error
	if o.Work == "" {
		if o.Work, err = os.MkdirTemp("", "ferry-bench-agent-"); err != nil {
			return err
		}
		if !o.Keep {
			defer os.RemoveAll(o.Work)
		}
	} else {
		if o.Work, err = filepath.Abs(o.Work); err != nil {
			return err
		}
		if err := os.MkdirAll(o.Work, 0o755); err != nil {
			return err
		}
	}
	fmt.Fprintln(stderr, "scratch directory:", o.Work)
	built := ""
	if o.Ferry == "" {
		if o.Ferry, err = buildFerry(ctx, o.Work); err != nil {
			return err
		}
		built = "built from this module's ./cmd/ferry"
	} else if o.Ferry, err = filepath.Abs(o.Ferry); err != nil {
		return err
	}

	b := &Bench{Opt: o, Progress: stderr}
	res, err := b.Run(ctx)
	if err != nil {
		return err
	}
	res.Command = "go run ./bench/agent " + strings.Join(args, " ")
	res.Machine = machineFacts(o.Work)
	res.Ferry = binaryFacts(o.Ferry, built)
	res.Date = time.Now().UTC()
	res.WriteMarkdown(stdout)
	if *out != "" {
		j, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(*out, append(j, '\n'), 0o644); err != nil {
			return err
		}
		fmt.Fprintln(stderr, "results:", *out)
	}
	return nil
}

// buildFerry builds the module's ./cmd/ferry into dir.
func buildFerry(ctx context.Context, dir string) (string, error) {
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(gomod)) == "" || strings.TrimSpace(string(gomod)) == os.DevNull {
		return "", fmt.Errorf("finding the ferry module (run from inside it, or give -ferry): %v", err)
	}
	bin := filepath.Join(dir, "ferry")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/ferry")
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(gomod)))
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/ferry: %w\n%s", err, out)
	}
	return bin, nil
}
