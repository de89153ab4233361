package integration

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry/internal/state/etcd/etcdtest"
	"github.com/ferrydeploy/ferry/internal/testenv"
)

// TestKillServerMidRollout SIGKILLs the (bolt) server at random moments of
// a rolling deployment over two hosts and starts it again on the same data
// and address: it resumes the rollout under the same lock, which ends
// succeeded with both hosts on the new release and the lock gone
// (FERRY_RELIABILITY_SERVER_KILLS, default 3). The etcd backend's version
// is TestKillEtcdLeaderMidRollout.
func TestKillServerMidRollout(t *testing.T) {
	goBin := testenv.NeedCommand(t, "go")
	testenv.NeedCommand(t, "curl")
	kills := envCount(t, "FERRY_RELIABILITY_SERVER_KILLS", 3)
	must := fleetCLI(t)
	versions, arts := killTestApp(t, goBin)
	fn := newFleetNet(t, 2)
	srv := startFleetServer(t, fn.serverIP)
	joinAgents(t, must, fn, srv, "", "")
	for _, a := range arts {
		must(0, "publish", a)
	}
	must(0, "deploy", "hello", "1.0.0", "--to", "prod", "--health-timeout", "30s")
	u, _ := url.Parse(srv.url)
	hc := fleetHTTPClient(t, srv)
	mid := countMid(t, kills)
	for i := 1; i <= kills; i++ {
		v := versions[i%2]
		id, label := startRollout(t, must, v, i)
		if deploymentState(hc, srv, id) == "running" {
			*mid++
		}
		srv.cmd.Process.Signal(syscall.SIGKILL)
		srv.cmd.Wait()
		// Again, on the same data and address.
		srv.cmd = exec.Command(ferryBin, "server", "--data", srv.data, "--listen", u.Host)
		logf, _ := os.OpenFile(srv.log, os.O_APPEND|os.O_WRONLY, 0)
		srv.cmd.Stdout, srv.cmd.Stderr = logf, logf
		if err := srv.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.cmd.Process.Kill(); srv.cmd.Wait(); logf.Close() })
		waitDeployment(t, srv, id, 60*time.Second, "succeeded")
		bothOn(t, must, i, label)
	}
}

// TestKillEtcdLeaderMidRollout is TestKillServerMidRollout on the etcd
// backend: two servers share one etcd, agents and the CLI know both, and
// the one driving rollouts is SIGKILLed at a random moment of each rolling
// deployment and started again. The other takes over (the dead leader's
// etcd session ends after SessionTTL) and the deployment ends succeeded
// with both hosts on its release and the lock gone
// (FERRY_RELIABILITY_SERVER_KILLS, default 3).
func TestKillEtcdLeaderMidRollout(t *testing.T) {
	goBin := testenv.NeedCommand(t, "go")
	testenv.NeedCommand(t, "curl")
	etcdtest.Binary(t)
	kills := envCount(t, "FERRY_RELIABILITY_SERVER_KILLS", 3)
	must := fleetCLI(t)
	versions, arts := killTestApp(t, goBin)
	fn := newFleetNet(t, 2)
	eps := etcdtest.Start(t, 1).Endpoints()
	state := []string{"--state", "etcd://" + strings.Join(eps, ","), "--etcd-prefix", "/itest/"}

	// The first start on the empty etcd makes the admin token and CA; the
	// second server gets the same TLS files, secrets key and artifacts.
	first := startFleetServer(t, fn.serverIP, state...)
	first.cmd.Process.Signal(syscall.SIGTERM)
	first.cmd.Wait()
	u, _ := url.Parse(first.url)
	second := t.TempDir()
	for _, f := range []string{"tls", "secrets.key"} {
		if out, err := exec.Command("cp", "-R", filepath.Join(first.data, f), second).CombinedOutput(); err != nil {
			t.Fatalf("copy %s: %v: %s", f, err, out)
		}
	}
	os.Symlink(filepath.Join(first.data, "artifacts"), filepath.Join(second, "artifacts"))
	data := []string{first.data, second}
	servers := []*etcdServer{
		startEtcdServer(t, "server-1", data[0], u.Host, eps),
		startEtcdServer(t, "server-2", data[1], net.JoinHostPort(fn.serverIP, "0"), eps),
	}
	addrs := make([]string, 2)
	for i, s := range servers {
		su, _ := url.Parse(s.url)
		addrs[i] = su.Host
	}
	both := &fleetServer{url: servers[0].url + "," + servers[1].url, token: first.token, ca: first.ca, data: first.data}
	joinAgents(t, must, fn, both, "", "")
	hc := fleetHTTPClient(t, both) // the servers share their CA
	for _, a := range arts {
		must(0, "publish", a)
	}
	must(0, "deploy", "hello", "1.0.0", "--to", "prod", "--health-timeout", "30s")

	mid := countMid(t, kills)
	for i := 1; i <= kills; i++ {
		v := versions[i%2]
		id, label := startRollout(t, must, v, i)
		leader := -1
		for deadline := time.Now().Add(15 * time.Second); leader < 0; time.Sleep(20 * time.Millisecond) {
			for k, s := range servers {
				if s.leads() {
					leader = k
				}
			}
			if leader < 0 && time.Now().After(deadline) {
				t.Fatalf("kill %d: no server leads", i)
			}
		}
		if deploymentState(hc, &fleetServer{url: servers[leader].url, token: first.token}, id) == "running" {
			*mid++
		}
		killed := time.Now()
		servers[leader].kill(syscall.SIGKILL)
		servers[leader] = startEtcdServer(t, servers[leader].name, data[leader], addrs[leader], eps)
		other := servers[1-leader]
		waitDeployment(t, &fleetServer{url: other.url, token: first.token, data: first.data}, id, 90*time.Second, "succeeded")
		t.Logf("kill %d: %s killed, the deployment of %s succeeded %s later", i, servers[leader].name, v, time.Since(killed).Round(100*time.Millisecond))
		bothOn(t, must, i, label)
	}
	// Either server gets every host's logs: agents long-poll both.
	for _, s := range servers {
		must(0, "login", s.url, "--token", first.token, "--ca-sha256", first.ca)
		r := must(0, "logs", "hello", "-n", "2")
		for _, want := range []string{"web-1 web.1 | ", "web-2 web.1 | "} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("ferry logs through %s lacks %q:\n%s%s", s.name, want, r.stdout, r.stderr)
			}
		}
	}
}

// killTestApp builds hello 1.0.0 and 2.0.0, whose new instances take a
// second to pass their first check, so that a rollout over two hosts in
// batches of one lasts a few seconds.
func killTestApp(t *testing.T, goBin string) (versions, arts []string) {
	dir := t.TempDir()
	buildHelloBin(t, goBin, dir)
	check := `test -e .checked || { sleep 1; touch .checked; }; `
	os.WriteFile(filepath.Join(dir, "ferry.yaml"), []byte(fleetYAML(check, ", timeout: 5s")), 0o644)
	versions = []string{"1.0.0", "2.0.0"}
	for _, v := range versions {
		p, _ := buildDir(t, dir, v)
		arts = append(arts, p)
	}
	return versions, arts
}

// startRollout starts a rolling deploy of v in batches of one, detached,
// and returns 0–1.5 s later (a random moment of the rollout, which lasts
// about two) its id and the label of its release.
func startRollout(t *testing.T, must func(int, ...string) result, v string, kill int) (id, label string) {
	t.Helper()
	var d struct {
		ID      string
		Release int
	}
	json.Unmarshal([]byte(must(0, "deploy", "hello", v, "--to", "prod", "--batch", "1", "--health-timeout", "30s", "--detach", "-o", "json").stdout), &d)
	if d.ID == "" || d.Release == 0 {
		t.Fatalf("kill %d: deploy -o json named no deployment", kill)
	}
	time.Sleep(time.Duration(rand.N(int64(1500 * time.Millisecond))))
	return d.ID, fmt.Sprintf("v%d", d.Release)
}

// countMid counts the kills that come while the deployment runs; at the
// test's end it says how many did, and fails the test if none did.
func countMid(t *testing.T, kills int) *int {
	mid := new(int)
	t.Cleanup(func() {
		t.Logf("%d of %d kills came while the deployment ran", *mid, kills)
		if *mid == 0 && !t.Failed() {
			t.Error("no kill came while a deployment ran")
		}
	})
	return mid
}

// deploymentState is what the server says of deployment id ("" when it
// does not answer).
func deploymentState(hc *http.Client, s *fleetServer, id string) string {
	var d struct{ State string }
	apiGet(hc, s, "/v1/deployments/"+id, &d)
	return d.State
}

// bothOn fails unless web-1 and web-2 run release want and no deploy lock
// is held.
func bothOn(t *testing.T, must func(int, ...string) result, kill int, want string) {
	t.Helper()
	var st fleetStatus
	json.Unmarshal([]byte(must(0, "status", "-o", "json").stdout), &st)
	if !st.host("web-1").runs("hello", want) || !st.host("web-2").runs("hello", want) {
		t.Fatalf("kill %d: hosts %s / %s", kill, st.host("web-1"), st.host("web-2"))
	}
	if r := must(0, "lock", "status", "-o", "json").stdout; strings.Contains(r, `"hello"`) {
		t.Fatalf("kill %d: the lock is still held: %s", kill, r)
	}
}
