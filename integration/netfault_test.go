package integration

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestNetworkFaults cuts and throttles the links between the server and
// two agents in their own network namespaces during rollouts: a rollout
// with a host cut off fails within its health timeout (it never hangs),
// the cut-off host keeps its app running, and when the link returns it
// converges without installing anything twice; with 10% packet loss each
// way (nftables) and over a 4 Mbit/s link (tc tbf) a rollout still
// completes within its timeout. (This kernel has no netem, so the 500 ms
// delay of the issue is not reproduced here; RELIABILITY.md says so.)
func TestNetworkFaults(t *testing.T) {
	goBin := need(t, "go")
	need(t, "curl")
	need(t, "tc")
	need(t, "nft")
	fn := newFleetNet(t, 2)
	if fn.ns == nil {
		if os.Getenv("CI") != "" && os.Getuid() == 0 {
			t.Fatal("no network namespaces: the link faults cannot be made")
		}
		t.Skip("no network namespaces here: the link faults cannot be made")
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
	for _, v := range []string{"1.0.0", "2.0.0", "3.0.0"} {
		arts[v], _ = buildDir(t, dir, v)
	}
	// Agents report every 5 s; two missed reports make a host lost.
	srv := startFleetServer(t, fn.serverIP, "--host-lost-after", "12s")
	agents := joinAgents(t, must, fn, srv, "", "")
	for _, v := range []string{"1.0.0", "2.0.0", "3.0.0"} {
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

	// 10% packet loss each way on web-2's link (nftables in its
	// namespace): the rollout completes within its timeout.
	nft := func(args ...string) { ip(append([]string{"ip", "netns", "exec", fn.ns[1], "nft"}, args...)...) }
	nft("add", "table", "inet", "ferryloss")
	nft("add chain inet ferryloss in { type filter hook input priority 0; }")
	nft("add chain inet ferryloss out { type filter hook output priority 0; }")
	nft("add rule inet ferryloss in numgen random mod 10 0 drop")
	nft("add rule inet ferryloss out numgen random mod 10 0 drop")
	start = time.Now()
	must(0, "deploy", "hello", "2.0.0", "--to", "prod", "--health-timeout", "120s", "--strategy", "all")
	t.Logf("with 10%% packet loss each way on web-2's link the rollout took %s", time.Since(start).Round(time.Millisecond))
	nft("delete", "table", "inet", "ferryloss")

	// A slow link (4 Mbit/s to web-1, the artifact 4.6 MiB): the rollout completes within its
	// timeout.
	ip("tc", "qdisc", "add", "dev", fn.veths[0], "root", "tbf", "rate", "4mbit", "burst", "64kbit", "latency", "400ms")
	defer exec.Command("tc", "qdisc", "del", "dev", fn.veths[0], "root").Run()
	start = time.Now()
	must(0, "deploy", "hello", "3.0.0", "--to", "prod", "--health-timeout", "120s", "--strategy", "all")
	t.Logf("over a 4 Mbit/s link the rollout took %s", time.Since(start).Round(time.Millisecond))
}
