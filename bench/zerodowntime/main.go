// Command zerodowntime is the load harness behind DESIGN.md's "Zero
// downtime": it drives the real `ferry agent` through many upgrades of the
// hello example under load from several kinds of client, counts every
// request's outcome, and gives a verdict. Negative controls (stop-start,
// two SO_REUSEPORT servers) must fail, so a pass means something;
// kamal-proxy runs the same load and upgrades side by side, and a direct
// run without upgrades is the latency baseline. See bench/README.md.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/ferrydeploy/ferry/internal/fsutil"
)

// config is every flag.
type config struct {
	Ferry, Kamal    string
	Modes, Controls []string
	Upgrades, Scale int
	AgentUpgrades   int
	AgentRestarts   int // SIGTERM and a new agent
	AgentKills      int // SIGKILL and a new agent
	Runs            int
	Bad             bool
	Load            loadConfig
	SpacingMin      time.Duration
	SpacingMax      time.Duration
	HealthTimeout   time.Duration
	DirectFor       time.Duration
	Out, Work       string
	Keep            bool
	Seed            uint64
	Repo            string
}

func main() {
	if addr := os.Getenv(envServe); addr != "" {
		serveReuseport(addr, os.Getenv(envRelease)) // the reuseport control's server, re-executed
		return
	}
	var cfg config
	var modes, controls string
	flag.StringVar(&cfg.Ferry, "ferry", "", "ferry binary (default: go build ./cmd/ferry from the repo)")
	flag.StringVar(&cfg.Kamal, "kamal", "", "kamal-proxy binary; with it, the kamal control runs (see bench/README.md to build v0.9.2)")
	flag.StringVar(&modes, "mode", "proxy", "agent upgrade modes to run, comma-separated: proxy, handoff, stop-start; empty for none")
	flag.StringVar(&controls, "control", "", "controls to run, comma-separated: reuseport, kamal, direct")
	flag.IntVar(&cfg.Upgrades, "upgrades", 100, "upgrades per run")
	flag.IntVar(&cfg.AgentUpgrades, "agent-upgrades", 2, "times the agent upgrades itself (ferry agent upgrade) during each agent run")
	flag.IntVar(&cfg.AgentRestarts, "agent-restarts", 2, "times the agent is stopped with SIGTERM (what systemctl restart sends) and started again during each agent run")
	flag.IntVar(&cfg.AgentKills, "agent-kills", 2, "times the agent is killed with SIGKILL and started again during each agent run")
	flag.IntVar(&cfg.Scale, "scale", 1, "instances of the web process (agent modes)")
	flag.IntVar(&cfg.Runs, "runs", 3, "runs per subject")
	flag.BoolVar(&cfg.Bad, "bad", false, "make every 4th upgrade a bad release: crashes at boot, never ready, or ignores SIGTERM (in turn)")
	flag.Float64Var(&cfg.Load.Rate, "rate", 500, "open-loop requests per second, spread over the clients")
	flag.IntVar(&cfg.Load.Workers, "workers", 4, "closed-loop workers sending back to back")
	flag.IntVar(&cfg.Load.SlowWorkers, "slow", 4, "closed-loop workers on GET /slow (when the app has it)")
	flag.IntVar(&cfg.Load.SlowMS, "slow-ms", 3000, "how long a slow request lasts")
	flag.DurationVar(&cfg.Load.Timeout, "timeout", 10*time.Second, "per-request timeout (slow requests: plus -slow-ms)")
	flag.DurationVar(&cfg.SpacingMin, "spacing-min", 200*time.Millisecond, "least pause between one upgrade finishing and the next")
	flag.DurationVar(&cfg.SpacingMax, "spacing-max", 800*time.Millisecond, "most pause between upgrades")
	flag.DurationVar(&cfg.HealthTimeout, "health-timeout", 10*time.Second, "ferry agent --health-timeout: how long a bad release gets")
	flag.DurationVar(&cfg.DirectFor, "direct-for", 10*time.Second, "how long the direct baseline runs")
	flag.StringVar(&cfg.Out, "out", "results.json", "where the results go as JSON; empty for none")
	flag.StringVar(&cfg.Work, "work", "", "scratch directory (default: a new one under $TMPDIR, removed at the end)")
	flag.BoolVar(&cfg.Keep, "keep", false, "keep the scratch directory (agent and app logs)")
	flag.Uint64Var(&cfg.Seed, "seed", uint64(time.Now().UnixNano()), "seed of the upgrade spacing")
	flag.Parse()
	cfg.Modes, cfg.Controls = splitList(modes), splitList(controls)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := run(ctx, cfg, os.Stderr)
	if res != nil {
		writeReport(os.Stdout, cfg, res)
		if cfg.Out != "" {
			b, _ := json.MarshalIndent(res, "", "  ")
			if werr := fsutil.WriteFile(cfg.Out, append(b, '\n'), 0o644); werr != nil && err == nil {
				err = werr
			}
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "zerodowntime:", err)
		os.Exit(2)
	}
	if !res.AsExpected {
		fmt.Fprintln(os.Stderr, "zerodowntime: a subject did not end as expected (see the report)")
		os.Exit(1)
	}
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
