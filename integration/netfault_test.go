package integration

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry/internal/testenv"
)

// TestNetworkFaults cuts, slows and delays the links between the server
// and two agents in their own network namespaces during rollouts: a
// rollout with a host cut off fails within its health timeout (it never
// hangs), the cut-off host keeps its app running, and when the link
// returns it converges without installing anything twice; with 10% packet
// loss each way (nftables), over a 4 Mbit/s link (tc tbf) and with 500 ms
// each way (NFQUEUE; this kernel has no netem) a rollout still completes
// within its timeout; with the delay and the loss together a rollout ends,
// one way or the other, within its timeout and the host keeps serving.
func TestNetworkFaults(t *testing.T) {
	goBin := testenv.NeedCommand(t, "go")
	testenv.NeedCommand(t, "curl")
	testenv.NeedCommand(t, "tc")
	testenv.NeedCommand(t, "nft")
	testenv.NeedCommand(t, "iptables-legacy")
	fn := newFleetNet(t, 2)
	if fn.ns == nil {
		testenv.SkipUnlessCIRoot(t, "no network namespaces here: the link faults cannot be made")
	}
	must := fleetCLI(t)
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v %s", strings.Join(args, " "), err, out)
		}
	}
	dir := t.TempDir()
	buildHelloBin(t, goBin, dir)
	os.WriteFile(filepath.Join(dir, "ferry.yaml"), []byte(fleetYAML("", ", timeout: 5s")), 0o644)
	arts := map[string]string{}
	versions := []string{"1.0.0", "2.0.0", "3.0.0", "4.0.0", "5.0.0", "6.0.0"}
	for _, v := range versions {
		arts[v], _ = buildDir(t, dir, v)
	}
	// Agents report every 5 s; two missed reports make a host lost.
	srv := startFleetServer(t, fn.serverIP, "--host-lost-after", "12s")
	agents := joinAgents(t, must, fn, srv, "", "")
	for _, v := range versions {
		must(0, "publish", arts[v])
	}
	must(0, "deploy", "hello", "1.0.0", "--to", "prod", "--health-timeout", "30s")
	status := func() fleetStatus {
		var st fleetStatus
		json.Unmarshal([]byte(must(0, "status", "-o", "json").stdout), &st)
		return st
	}
	helloUnder := func(a *fleetAgent) int { return len(pidsUnder(a.root, "hello")) }

	// Cut web-2 off; a rollout to both fails within its timeout.
	ip("ip", "link", "set", fn.veths[1], "down")
	start := time.Now()
	r, _ := fleetRun(context.Background(), nil, "deploy", "hello", "2.0.0", "--to", "prod", "--health-timeout", "10s", "--strategy", "all")
	took := time.Since(start)
	if r.code == 0 {
		t.Fatalf("a rollout to a host cut off succeeded:\n%s", r.stdout)
	}
	if took > 45*time.Second {
		t.Errorf("the rollout with a host cut off took %s to fail, with a 10s health timeout", took)
	}
	t.Logf("with web-2 cut off the rollout failed after %s (exit %d)", took.Round(time.Millisecond), r.code)
	if helloUnder(agents[1]) == 0 {
		t.Error("web-2's app stopped while it was cut off")
	}
	// Back: it converges to the group's release, installing nothing twice.
	ip("ip", "link", "set", fn.veths[1], "up")
	up := time.Now()
	deadline := time.Now().Add(60 * time.Second)
	// (A report from after the link came back, not the last one before.)
	for st := status(); !st.host("web-1").runs("hello", "v1") || !st.host("web-2").runs("hello", "v1") || st.host("web-2").LastSeen.Before(up); st = status() {
		if time.Now().After(deadline) {
			t.Fatalf("after the link came back: %s / %s", st.host("web-1"), st.host("web-2"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	back := time.Since(up)
	t.Logf("web-2 reported again %s after its link came back", back.Round(time.Millisecond))
	// A report stuck during the cut is given up after 10 s and sent anew.
	if back > 20*time.Second {
		t.Errorf("web-2 reported again only %s after its link came back", back.Round(time.Millisecond))
	}
	installedOnce := func() {
		t.Helper()
		for _, a := range agents {
			rels, _ := os.ReadDir(filepath.Join(a.root, "apps", "hello", "releases"))
			seen := map[string]bool{}
			for _, e := range rels {
				label, _, _ := strings.Cut(e.Name(), "-")
				if strings.HasPrefix(e.Name(), ".") || seen[label] {
					t.Errorf("%s: releases holds %s twice or half-written", a.name, e.Name())
				}
				seen[label] = true
			}
		}
	}
	installedOnce()

	// 10% packet loss each way on web-2's link (nftables in its
	// namespace): the rollout completes within its timeout.
	nft := func(args ...string) { ip(append([]string{"ip", "netns", "exec", fn.ns[1], "nft"}, args...)...) }
	loss := func() {
		nft("add", "table", "inet", "ferryloss")
		nft("add chain inet ferryloss in { type filter hook input priority 0; }")
		nft("add chain inet ferryloss out { type filter hook output priority 0; }")
		nft("add rule inet ferryloss in numgen random mod 10 0 drop")
		nft("add rule inet ferryloss out numgen random mod 10 0 drop")
	}
	loss()
	start = time.Now()
	must(0, "deploy", "hello", "2.0.0", "--to", "prod", "--health-timeout", "120s", "--strategy", "all")
	t.Logf("with 10%% packet loss each way on web-2's link the rollout took %s", time.Since(start).Round(time.Millisecond))
	nft("delete", "table", "inet", "ferryloss")

	// A slow link (4 Mbit/s to web-1, the artifact 4.6 MiB): the rollout completes within its
	// timeout.
	ip("tc", "qdisc", "add", "dev", fn.veths[0], "root", "tbf", "rate", "4mbit", "burst", "64kbit", "latency", "400ms")
	start = time.Now()
	must(0, "deploy", "hello", "3.0.0", "--to", "prod", "--health-timeout", "120s", "--strategy", "all")
	t.Logf("over a 4 Mbit/s link the rollout took %s", time.Since(start).Round(time.Millisecond))
	ip("tc", "qdisc", "del", "dev", fn.veths[0], "root")

	// 500 ms each way on web-2's link, a second's round trip: the rollout
	// (web-2 downloads the artifact through it) completes within its
	// timeout.
	delay := delayLink(t, fn.ns[1], 500*time.Millisecond)
	if rtt := connectTime(t, fn.ns[1], srv.url); rtt < 900*time.Millisecond {
		t.Fatalf("a TCP connect over the delayed link took %s; the delay is not in effect", rtt)
	} else {
		t.Logf("a TCP connect from web-2 to the server takes %s over the delayed link", rtt.Round(time.Millisecond))
	}
	start = time.Now()
	must(0, "deploy", "hello", "4.0.0", "--to", "prod", "--health-timeout", "120s", "--strategy", "all")
	t.Logf("with 500 ms each way on web-2's link the rollout took %s (%s)", time.Since(start).Round(time.Millisecond), delay.report())

	// The delay and 10% loss each way together: an artifact download
	// crawls. A rollout with a 30 s health timeout ends within it and its
	// rollback's, one way or the other; web-2 keeps its app running.
	loss()
	start = time.Now()
	r, _ = fleetRun(context.Background(), nil, "deploy", "hello", "5.0.0", "--to", "prod", "--health-timeout", "30s", "--strategy", "all")
	took = time.Since(start)
	t.Logf("with 500 ms and 10%% loss each way on web-2's link the rollout ended after %s with exit %d (%s)", took.Round(time.Millisecond), r.code, delay.report())
	if took > 90*time.Second {
		t.Errorf("the rollout over a delayed and lossy link took %s with a 30s health timeout", took)
	}
	if r.code != 0 && r.code != 4 {
		t.Errorf("the rollout over a delayed and lossy link ended with exit %d:\n%s%s", r.code, r.stdout, r.stderr)
	}
	if helloUnder(agents[1]) == 0 {
		t.Error("web-2's app stopped while its link was delayed and lossy")
	}
	// Under both, a health timeout too short for web-2's download: the
	// rollout fails and rolls back within its bounds, and web-2 still
	// runs what it ran.
	// What web-2 runs once both hosts report the group's release (reports
	// cross the slow link every 5 s).
	var before string
	deadline = time.Now().Add(30 * time.Second)
	for st := status(); ; st = status() {
		if w1 := st.host("web-1"); w1 != nil && w1.Apps["hello"] != nil && w1.runs("hello", w1.Apps["hello"].Label) && st.host("web-2").runs("hello", w1.Apps["hello"].Label) {
			before = w1.Apps["hello"].Label
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the hosts do not settle on one release: %s / %s", st.host("web-1"), st.host("web-2"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	start = time.Now()
	r, _ = fleetRun(context.Background(), nil, "deploy", "hello", "6.0.0", "--to", "prod", "--health-timeout", "3s", "--strategy", "all")
	took = time.Since(start)
	t.Logf("with a 3 s health timeout over the delayed and lossy link the rollout failed after %s with exit %d: %s", took.Round(time.Millisecond), r.code, lastLine(r.stderr))
	if r.code != 4 {
		t.Errorf("a rollout that cannot meet its health timeout ended with exit %d, not 4:\n%s%s", r.code, r.stdout, r.stderr)
	}
	if took > 60*time.Second {
		t.Errorf("a rollout with a 3s health timeout took %s to fail", took)
	}
	// The rollback's own confirmation has the same 3 s and may time out
	// before web-2's report crosses the link ("rolling back failed");
	// web-2 must be back on its release all the same, and soon.
	ended := time.Now()
	deadline = time.Now().Add(30 * time.Second)
	for st := status(); !st.host("web-2").runs("hello", before); st = status() {
		if time.Now().After(deadline) {
			t.Fatalf("after the failed rollout web-2 does not run %s: %s", before, st.host("web-2"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("web-2 reported %s running %s after the rollout ended", before, time.Since(ended).Round(time.Millisecond))

	// Faults lifted: the same deploy succeeds and nothing was installed twice.
	nft("delete", "table", "inet", "ferryloss")
	delay.lift()
	start = time.Now()
	must(0, "deploy", "hello", "6.0.0", "--to", "prod", "--health-timeout", "60s", "--strategy", "all")
	t.Logf("with the faults lifted the rollout took %s", time.Since(start).Round(time.Millisecond))
	installedOnce()
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndex(s, "\n")+1:]
}

// connectTime is how long a TCP connect from inside ns to the server at
// url takes.
func connectTime(t *testing.T, ns, url string) time.Duration {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns, "curl", "-sk", "-o", "/dev/null", "-w", "%{time_connect}", url+"/v1/whoami").Output()
	if err != nil && len(out) == 0 {
		t.Fatalf("curl from %s: %v", ns, err)
	}
	secs, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
	if err != nil {
		t.Fatalf("curl's connect time %q: %v", out, err)
	}
	return time.Duration(secs * float64(time.Second))
}
