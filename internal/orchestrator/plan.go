package orchestrator

import (
	"strconv"
	"strings"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
)

// Deployment defaults.
const (
	DefaultBatch         = "25%"
	DefaultHealthTimeout = 60 * time.Second
)

// CheckPlan fills a deployment's defaults and checks its strategy.
func CheckPlan(d *api.Deployment) error {
	if d.Strategy == "" {
		d.Strategy = api.StrategyRolling
	}
	if d.Batch == "" {
		d.Batch = DefaultBatch
	}
	if d.HealthTimeout <= 0 {
		d.HealthTimeout = DefaultHealthTimeout
	}
	switch d.Strategy {
	case api.StrategyAll, api.StrategyRolling:
	case api.StrategyCanary:
		if d.Canary <= 0 {
			d.Canary = 1
		}
	default:
		return ferry.Errorf(ferry.EINVALID, "strategy %q: use all, rolling or canary", d.Strategy)
	}
	_, err := batchSize(d.Batch, 1)
	return err
}

// batchSize is how many of n hosts a batch spec ("2", "25%") means: at
// least one.
func batchSize(spec string, n int) (int, error) {
	bad := ferry.Errorf(ferry.EINVALID, "batch %q: want a number of hosts (2) or a percentage (25%%)", spec)
	if pct, ok := strings.CutSuffix(spec, "%"); ok {
		v, err := strconv.Atoi(pct)
		if err != nil || v <= 0 || v > 100 {
			return 0, bad
		}
		return max(1, (n*v+99)/100), nil
	}
	v, err := strconv.Atoi(spec)
	if err != nil || v <= 0 {
		return 0, bad
	}
	return v, nil
}

// plan assigns hosts (sorted by name) to batches.
func plan(d *api.Deployment, hosts []string) {
	d.Hosts = map[string]api.HostRollout{}
	size, _ := batchSize(d.Batch, len(hosts))
	rest, first := hosts, 0
	if d.Strategy == api.StrategyCanary {
		c := min(d.Canary, len(hosts))
		for _, h := range hosts[:c] {
			d.Hosts[h] = api.HostRollout{Batch: 0, State: ferry.HostPending}
		}
		rest, first = hosts[c:], 1
	}
	if d.Strategy == api.StrategyAll {
		size = max(len(rest), 1)
	}
	for i, h := range rest {
		d.Hosts[h] = api.HostRollout{Batch: first + i/size, State: ferry.HostPending}
	}
}
