package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/internal/testenv"
)

// TestConcurrentDeploys: 20 `ferry deploy` of one app to one group at once
// — exactly one proceeds and the other 19 exit 3 (locked); 20 with
// --wait-lock all succeed, one deployment at a time; 20 of different apps
// all succeed and run at the same time.
func TestConcurrentDeploys(t *testing.T) {
	goBin := testenv.NeedCommand(t, "go")
	testenv.NeedCommand(t, "curl")
	must := fleetCLI(t)
	// hello's health check waits 2 s the first time each instance is
	// checked, so a rollout lasts long enough for the others to find its
	// lock held.
	dir := t.TempDir()
	buildHelloBin(t, goBin, dir)
	check := `test -e .checked || { sleep 2; touch .checked; }; `
	write := func(app string) {
		y := strings.Replace(fleetYAML(check, ", timeout: 5s"), "app: hello", "app: "+app, 1)
		os.WriteFile(filepath.Join(dir, "ferry.yaml"), []byte(y), 0o644)
	}
	var arts []string
	for _, v := range []string{"1.0.0", "2.0.0"} {
		write("hello")
		p, _ := buildDir(t, dir, v)
		arts = append(arts, p)
	}
	const n = 20
	for i := 1; i <= n; i++ {
		write(fmt.Sprintf("app%02d", i))
		p, _ := buildDir(t, dir, "1.0.0")
		arts = append(arts, p)
	}
	fn := newFleetNet(t, 1)
	srv := startFleetServer(t, fn.serverIP)
	joinAgents(t, must, fn, srv, "")
	for _, a := range arts {
		must(0, "publish", a)
	}
	// all runs the same command n times at once and returns the results.
	all := func(args func(i int) []string) []result {
		var wg sync.WaitGroup
		out := make([]result, n)
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				r, err := fleetRun(context.Background(), nil, args(i)...)
				if err != nil {
					t.Error(err)
				}
				out[i] = r
			})
		}
		close(start)
		wg.Wait()
		return out
	}
	deployments := func(app string) []api.Deployment {
		var ds []api.Deployment
		if err := apiGet(fleetHTTPClient(t, srv), srv, api.PathDeployments+"?app="+app, &ds); err != nil {
			t.Fatal(err)
		}
		return ds
	}
	// overlap is the most deployments of ds that ran at one moment.
	overlap := func(ds []api.Deployment) int {
		most := 0
		for _, a := range ds {
			k := 0
			for _, b := range ds {
				if !b.Started.After(a.Started) && (b.Ended.IsZero() || b.Ended.After(a.Started)) {
					k++
				}
			}
			most = max(most, k)
		}
		return most
	}

	codes := map[int]int{}
	for _, r := range all(func(int) []string {
		return []string{"deploy", "hello", "1.0.0", "--to", "prod", "--health-timeout", "30s"}
	}) {
		codes[r.code]++
		if r.code == 3 && !strings.Contains(r.stderr, "locked") {
			t.Errorf("exit 3 without saying it is locked: %s", r.stderr)
		}
	}
	if codes[0] != 1 || codes[3] != n-1 {
		t.Fatalf("%d deploys of one app to one group at once: exit codes %v, want one 0 and %d × 3", n, codes, n-1)
	}

	before := len(deployments("hello"))
	for i, r := range all(func(int) []string {
		return []string{"deploy", "hello", "2.0.0", "--to", "prod", "--health-timeout", "30s", "--wait-lock", "3m"}
	}) {
		if r.code != 0 {
			t.Errorf("deploy %d with --wait-lock: exit %d: %s", i, r.code, r.stderr)
		}
	}
	ds := deployments("hello")
	if len(ds)-before != n {
		t.Errorf("%d deploys with --wait-lock made %d deployments", n, len(ds)-before)
	}
	if k := overlap(ds); k != 1 {
		t.Errorf("hello's deployments to prod overlapped: %d at once", k)
	}

	var parallel []api.Deployment
	for i, r := range all(func(i int) []string {
		return []string{"deploy", fmt.Sprintf("app%02d", i+1), "1.0.0", "--to", "prod", "--health-timeout", "60s"}
	}) {
		if r.code != 0 {
			t.Errorf("deploy of app%02d: exit %d: %s", i+1, r.code, r.stderr)
		}
	}
	for i := 1; i <= n; i++ {
		parallel = append(parallel, deployments(fmt.Sprintf("app%02d", i))...)
	}
	if k := overlap(parallel); k < n/2 {
		t.Errorf("deploys of %d different apps ran at most %d at once, want them in parallel", n, k)
	} else {
		t.Logf("%d apps deployed at once: up to %d deployments ran at the same time", n, k)
	}
}
