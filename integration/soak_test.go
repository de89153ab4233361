package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry/internal/testenv"
)

// procUsage is a process's resident memory (KiB) and open descriptors.
func procUsage(pid int) (rssKiB, fds int) {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			rssKiB, _ = strconv.Atoi(strings.Fields(v)[0])
		}
	}
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return rssKiB, len(ents)
}

// TestSoak deploys two releases alternately to three agents while each
// serves keep-alive GETs, POSTs and fresh connections through its proxy:
// no request may fail, the agents' and the server's file descriptors and
// memory stay within bounds once warm, and retention bounds the releases
// on disk. FERRY_SOAK_DEPLOYS sets how many deploys (default 6; `make
// reliability` runs 500).
func TestSoak(t *testing.T) {
	testenv.NeedCommand(t, "go")
	deploys := envCount(t, "FERRY_SOAK_DEPLOYS", 6)
	fn := newFleetNet(t, 3)
	if fn.ns == nil {
		testenv.SkipUnlessCIRoot(t, "no network namespaces here: three agents cannot own the same port")
	}
	must := fleetCLI(t)
	const port = 18080
	dir := helloApp(t, port, "proxy", 1)
	var arts []string
	for _, v := range []string{"1.0.0", "2.0.0"} {
		p, _ := buildDir(t, dir, v)
		arts = append(arts, p)
	}
	srv := startFleetServer(t, fn.serverIP)
	agents := joinAgents(t, must, fn, srv, "", "", "")
	for _, a := range arts {
		must(0, "publish", a)
	}
	must(0, "deploy", "hello", "1.0.0", "--to", "prod", "--health-timeout", "30s")
	stop := make(chan struct{})
	net := strings.TrimSuffix(fn.serverIP, ".1")
	var loads []*load
	for i := range agents {
		loads = append(loads, startLoad(fmt.Sprintf("http://%s.%d:%d/", net, 11+i, port), stop))
	}
	type sample struct{ rss, fds []int }
	take := func() sample {
		var s sample
		for _, pid := range []int{srv.cmd.Process.Pid, agents[0].cmd.Process.Pid, agents[1].cmd.Process.Pid, agents[2].cmd.Process.Pid} {
			r, f := procUsage(pid)
			s.rss, s.fds = append(s.rss, r), append(s.fds, f)
		}
		return s
	}
	var warm sample
	start := time.Now()
	for i := 1; i <= deploys; i++ {
		must(0, "deploy", "hello", []string{"1.0.0", "2.0.0"}[i%2], "--to", "prod", "--health-timeout", "30s", "--strategy", "all")
		if i == min(4, deploys) {
			warm = take()
		}
	}
	took := time.Since(start)
	close(stop)
	var ok, failed int64
	var errs []string
	for _, l := range loads {
		l.wg.Wait()
		ok, failed = ok+l.ok.Load(), failed+l.failed.Load()
		errs = append(errs, l.errs...)
	}
	end := take()
	names := []string{"server", "web-1", "web-2", "web-3"}
	var usage []string
	for k := range names {
		usage = append(usage, fmt.Sprintf("%s rss %d→%d KiB fds %d→%d", names[k], warm.rss[k], end.rss[k], warm.fds[k], end.fds[k]))
		// Bounds, once warm: descriptors may not grow by more than 10 (a
		// few connections in flight), memory by more than 50% + 16 MiB.
		if end.fds[k] > warm.fds[k]+10 {
			t.Errorf("%s: %d open files after %d deploys, %d when warm", names[k], end.fds[k], deploys, warm.fds[k])
		}
		if end.rss[k] > warm.rss[k]*3/2+16<<10 {
			t.Errorf("%s: RSS %d KiB after %d deploys, %d KiB when warm", names[k], end.rss[k], deploys, warm.rss[k])
		}
	}
	t.Logf("%d deploys in %s; %d requests, %d failed; %s", deploys, took.Round(time.Second), ok, failed, strings.Join(usage, "; "))
	if failed > 0 {
		t.Errorf("%d of %d requests failed, e.g. %s", failed, ok+failed, strings.Join(errs[:min(len(errs), 5)], "; "))
	}
	if ok == 0 {
		t.Error("no request succeeded: the load reached nothing")
	}
	for _, a := range agents {
		rels, _ := filepath.Glob(filepath.Join(a.root, "apps", "hello", "releases", "*"))
		if len(rels) > 5 {
			t.Errorf("%s keeps %d releases, more than keep_releases 5", a.name, len(rels))
		}
	}
}
