// Command fleet benchmarks ferry's control plane with many agents: one
// in-process server and -agents agents in this same process (each with its
// own root, its own client and credential, sharing nothing but loopback),
// timing `deploy` of a -artifact-mb artifact to every host healthy, and how
// long the desired-state change takes to reach each agent. See
// bench/README.md.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/fleet:", err)
		os.Exit(1)
	}
}

// Options are the bench's flags.
type Options struct {
	Agents        []int         `json:"agents"`
	ArtifactMB    int           `json:"artifact_mb"` // MiB of incompressible data in each artifact
	Deploys       int           `json:"deploys"`
	Scale         int           `json:"scale"`
	HealthTimeout time.Duration `json:"health_timeout"`
	HostLostAfter time.Duration `json:"host_lost_after"`
	Joiners       int           `json:"joiners"`
	Work          string        `json:"work"`
	Keep          bool          `json:"keep"`
	NoDiskCheck   bool          `json:"no_disk_check"`
	CPUProfile    string        `json:"cpu_profile,omitempty"`
	ServerData    string        `json:"server_data,omitempty"`
	ServerBin     string        `json:"server_bin,omitempty"`
	S3            bool          `json:"s3,omitempty"`
	Direct        bool          `json:"direct,omitempty"`
	CacheMB       int           `json:"cache_mb,omitempty"`
	Redeploy      bool          `json:"redeploy,omitempty"`
}

// Run parses args, runs the benchmark once per agent count, prints the
// report to stdout and writes the results as JSON to -out.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("fleet", flag.ContinueOnError)
	fl.SetOutput(stderr)
	var (
		o      Options
		out    = fl.String("out", "results.json", "write the results as JSON to this file (\"\": don't)")
		agents = fl.String("agents", "100", "agents to run, a comma-separated list runs the bench once per count (e.g. 100,1000)")
	)
	fl.IntVar(&o.ArtifactMB, "artifact-mb", 20, "MiB of incompressible data in each release's artifact")
	fl.IntVar(&o.Deploys, "deploys", 2, "releases deployed one after the other (each a new artifact every agent downloads)")
	fl.IntVar(&o.Scale, "scale", 1, "instances of the app's process per agent (`exec sleep 100000`)")
	fl.DurationVar(&o.HealthTimeout, "health-timeout", 10*time.Minute, "the deploys' health timeout")
	fl.DurationVar(&o.HostLostAfter, "host-lost-after", 30*time.Second, "the server's --host-lost-after: simulated hosts that share this machine's CPUs can be starved longer than real ones")
	fl.IntVar(&o.Joiners, "joiners", 16, "agents joining the server at the same time")
	fl.StringVar(&o.Work, "work", "", "scratch directory (default: a new one under $TMPDIR, removed afterwards)")
	fl.BoolVar(&o.Keep, "keep", false, "keep the scratch directory (server data, agents' roots, log)")
	fl.StringVar(&o.CPUProfile, "cpuprofile", "", "write a CPU profile of the deploys to this file (.N appended per agent count)")
	fl.StringVar(&o.ServerData, "server-data", "", "the server's data directory (state.db, artifacts) instead of one in the scratch directory; e.g. on a tmpfs, so the agents' installs on the same disk do not stall the server's fsyncs, as they would not in a real fleet (.N appended per agent count, removed afterwards unless -keep)")
	fl.StringVar(&o.ServerBin, "server-bin", "", "run this ferry binary's server as its own process (its CPU and bytes written are then measured apart from the agents')")
	fl.BoolVar(&o.S3, "s3", false, "keep artifacts in a real S3-compatible server (versitygw from PATH, started by the bench)")
	fl.BoolVar(&o.Direct, "direct", false, "with -s3: agents download from the bucket with signed URLs (ferry server --direct-download)")
	fl.IntVar(&o.CacheMB, "cache-mb", 0, "each agent's artifact cache in MiB (0: only the artifacts that run)")
	fl.BoolVar(&o.Redeploy, "redeploy", false, "after the deploys, deploy the first version again: from the agents' caches when -cache-mb holds it")
	fl.BoolVar(&o.NoDiskCheck, "no-disk-check", false, "run even when the scratch filesystem looks too small for agents × artifacts")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if fl.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fl.Args(), " "))
	}
	for _, s := range strings.Split(*agents, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return fmt.Errorf("-agents %q: want positive counts, comma-separated", *agents)
		}
		o.Agents = append(o.Agents, n)
	}
	if o.Direct && !o.S3 {
		return fmt.Errorf("-direct needs -s3: a directory store cannot sign URLs")
	}
	if o.ArtifactMB < 0 || o.Deploys < 1 || o.Scale < 0 || o.Joiners < 1 || o.HealthTimeout <= 0 {
		return fmt.Errorf("-artifact-mb must be at least 0, -deploys and -joiners at least 1, -scale at least 0, -health-timeout positive")
	}
	var err error
	if o.Work == "" {
		if o.Work, err = os.MkdirTemp("", "ferry-bench-fleet-"); err != nil {
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

	res := &Results{Command: "go run ./bench/fleet " + strings.Join(args, " "), Options: o, Machine: machineFacts(o.Work)}
	res.Limits = raiseNoFile()
	arts, err := buildArtifacts(ctx, filepath.Join(o.Work, "build"), o.ArtifactMB, o.Deploys, o.Scale)
	if err != nil {
		return err
	}
	res.Artifacts = arts
	var runErr error
	for _, n := range o.Agents {
		dir := filepath.Join(o.Work, fmt.Sprintf("fleet-%d", n))
		b := &Bench{Opt: o, N: n, Dir: dir, Artifacts: arts, Progress: stderr}
		r, err := b.Run(ctx)
		res.Runs = append(res.Runs, r)
		if !o.Keep {
			os.RemoveAll(dir) // an agents × artifacts tree can be tens of GB: free it before the next count
		}
		if err != nil {
			runErr = fmt.Errorf("%d agents: %w", n, err)
			break
		}
	}
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
	return runErr
}
