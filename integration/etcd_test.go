package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry/internal/state/etcd/etcdtest"
	"github.com/ferrydeploy/ferry/internal/testenv"
)

// etcdServer is a `ferry server --state etcd://…` process; such a server
// prints no welcome (the state was made before it), so its URL comes from
// its "serving" log line.
type etcdServer struct {
	name, url string
	cmd       *exec.Cmd
	done      chan struct{}
	log       string
}

var servingRe = regexp.MustCompile(`msg=serving url=(\S+)`)

func startEtcdServer(t *testing.T, name, data, listen string, endpoints []string) *etcdServer {
	t.Helper()
	s := &etcdServer{name: name, log: filepath.Join(t.TempDir(), name+".log"), done: make(chan struct{})}
	logf, err := os.Create(s.log)
	if err != nil {
		t.Fatal(err)
	}
	s.cmd = exec.Command(ferryBin, "server", "--data", data, "--listen", listen,
		"--state", "etcd://"+strings.Join(endpoints, ","), "--etcd-prefix", "/itest/")
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.cmd.Wait(); logf.Close(); close(s.done) }()
	t.Cleanup(func() {
		s.kill(syscall.SIGTERM)
		if t.Failed() {
			b, _ := os.ReadFile(s.log)
			t.Logf("%s log:\n%s", name, tail(b, 60))
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for s.url == "" {
		b, _ := os.ReadFile(s.log)
		if m := servingRe.FindSubmatch(b); m != nil {
			s.url = string(m[1])
			break
		}
		select {
		case <-s.done:
			t.Fatalf("%s exited at start:\n%s", name, b)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not serve within 20s:\n%s", name, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return s
}

func (s *etcdServer) kill(sig syscall.Signal) {
	s.cmd.Process.Signal(sig)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
}

func (s *etcdServer) leads() bool {
	b, _ := os.ReadFile(s.log)
	return strings.Count(string(b), "leading: this server drives rollouts") > strings.Count(string(b), "no longer leading")
}

// TestEtcdControlPlane grows a single-server installation into two servers
// on a three-member etcd cluster and attacks it: ferry server migrate moves
// the bolt state over, verified; two servers share it and agents follow
// either; the leader is SIGKILLed mid-rollout and the other finishes the
// rollout and lets go of the lock; one etcd member down changes nothing;
// two down make the API answer 503 saying why while the apps keep running;
// with the members back, everything works again.
func TestEtcdControlPlane(t *testing.T) {
	goBin := testenv.NeedCommand(t, "go")
	testenv.NeedCommand(t, "curl")
	etcdtest.Binary(t)
	start := time.Now()
	defer func() { t.Logf("TestEtcdControlPlane took %s", time.Since(start).Round(100*time.Millisecond)) }()
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	for _, k := range []string{"FERRY_SERVER", "FERRY_TOKEN", "FERRY_CA_SHA256"} {
		t.Setenv(k, "")
	}
	cli := func(args ...string) result {
		t.Helper()
		r, err := fleetRun(context.Background(), nil, args...)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	must := func(code int, args ...string) result {
		t.Helper()
		r := cli(args...)
		if r.code != code {
			t.Fatalf("ferry %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, code, r.stdout, r.stderr)
		}
		return r
	}

	// hello 1, 2 and 3; 2 and 3 take a second or more to become healthy, so
	// that a rollout over two hosts lasts long enough to kill its driver.
	app := t.TempDir()
	buildHelloBin(t, goBin, app)
	arts := map[string]string{}
	for v, delay := range map[string]string{"1.0.0": "0", "2.0.0": "1.5", "3.0.0": "1.5"} {
		os.WriteFile(filepath.Join(app, "ferry.yaml"), []byte(fleetYAML("sleep "+delay+"; ", ", timeout: 5s")), 0o644)
		arts[v], _ = buildDir(t, app, v)
	}

	// One bolt server, two agents, v1 deployed.
	fn := newFleetNet(t, 2)
	a := startFleetServer(t, fn.serverIP)
	must(0, "login", a.url, "--token", a.token, "--ca-sha256", a.ca)
	var tok struct{ Secret string }
	if err := json.Unmarshal([]byte(must(0, "agent", "join-token", "--group", "prod", "-o", "json").stdout), &tok); err != nil {
		t.Fatal(err)
	}
	var agents []*fleetAgent
	for i := range 2 {
		agents = append(agents, startFleetAgent(t, fn, i, a, tok.Secret))
	}
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(must(0, "status", "-o", "json").stdout, `"web-2"`) || !strings.Contains(must(0, "status", "-o", "json").stdout, `"web-1"`) {
		if time.Now().After(deadline) {
			t.Fatal("the agents did not join within 20s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	must(0, "publish", arts["1.0.0"])
	must(0, "deploy", "hello", "1.0.0", "--to", "prod", "--health-timeout", "20s")

	// Stop it and migrate its state into etcd.
	cluster := etcdtest.Start(t, 3)
	a.cmd.Process.Signal(syscall.SIGTERM)
	a.cmd.Wait()
	eps := cluster.Endpoints()
	r := must(0, "server", "migrate", "--from", "bolt://"+filepath.Join(a.data, "state.db"),
		"--to", "etcd://"+strings.Join(eps, ","), "--etcd-prefix", "/itest/")
	if !regexp.MustCompile(`copied \d+ keys .* and verified them`).MatchString(r.stdout) {
		t.Fatalf("migrate said: %s", r.stdout)
	}
	r = cli("server", "migrate", "--from", "bolt://"+filepath.Join(a.data, "state.db"),
		"--to", "etcd://"+strings.Join(eps, ","), "--etcd-prefix", "/itest/")
	if r.code != 2 || !strings.Contains(r.stderr, "migrate only into an empty store") {
		t.Fatalf("a second migrate into the same prefix: exit %d: %s", r.code, r.stderr)
	}

	// Two servers on the etcd state: the old one at its old address (the
	// agents know it), and a second with the same CA and artifacts.
	u, _ := url.Parse(a.url)
	b := t.TempDir()
	if out, err := exec.Command("cp", "-R", filepath.Join(a.data, "tls"), b).CombinedOutput(); err != nil {
		t.Fatalf("copy tls: %v: %s", err, out)
	}
	os.Symlink(filepath.Join(a.data, "artifacts"), filepath.Join(b, "artifacts"))
	// Without the first server's secrets key the second refuses to start.
	if r := cli("server", "--data", b, "--listen", net.JoinHostPort(fn.serverIP, "0"), "--state", "etcd://"+strings.Join(eps, ","), "--etcd-prefix", "/itest/"); r.code == 0 || !strings.Contains(r.stderr, "copy secrets.key from the first server") {
		t.Fatalf("a second server without the secrets key: exit %d\n%s", r.code, r.stderr)
	}
	if out, err := exec.Command("cp", filepath.Join(a.data, "secrets.key"), b).CombinedOutput(); err != nil {
		t.Fatalf("copy secrets.key: %v: %s", err, out)
	}
	s1 := startEtcdServer(t, "server-1", a.data, u.Host, eps)
	s2 := startEtcdServer(t, "server-2", b, net.JoinHostPort(fn.serverIP, "0"), eps)
	both := s1.url + "," + s2.url
	must(0, "login", both, "--token", a.token, "--ca-sha256", a.ca)
	st := must(0, "status", "-o", "json").stdout
	if !strings.Contains(st, `"web-1"`) || !strings.Contains(st, `"web-2"`) {
		t.Fatalf("status after the migration lost the hosts:\n%s", st)
	}
	// The agents now know both servers.
	for _, ag := range agents {
		ag.kill()
		for i, arg := range ag.args {
			if arg == "--server" {
				ag.args[i+1] = both
			}
		}
		ag.start()
	}

	// A rollout, and its driver dies.
	var leader, other *etcdServer
	deadline = time.Now().Add(15 * time.Second)
	for leader == nil {
		switch {
		case s1.leads():
			leader, other = s1, s2
		case s2.leads():
			leader, other = s2, s1
		case time.Now().After(deadline):
			t.Fatal("no server leads within 15s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	must(0, "publish", arts["2.0.0"])
	must(0, "login", other.url, "--token", a.token, "--ca-sha256", a.ca)
	id := strings.TrimSpace(must(0, "deploy", "hello", "2.0.0", "--to", "prod", "--batch", "1", "--detach", "--health-timeout", "30s").stdout)
	waitDeploying(t, &fleetServer{url: other.url, data: a.data, token: a.token}, id) // the first host is installing 2.0.0
	killed := time.Now()
	leader.kill(syscall.SIGKILL)
	t.Logf("killed the leader, %s, mid-rollout", leader.name)
	waitDeployment(t, &fleetServer{url: other.url, data: a.data, token: a.token}, id, 60*time.Second, "succeeded")
	t.Logf("%s finished the rollout %s after the leader died", other.name, time.Since(killed).Round(100*time.Millisecond))
	if r := must(0, "lock", "status", "-o", "json"); strings.Contains(r.stdout, "hello") {
		t.Fatalf("the lock outlived the rollout:\n%s", r.stdout)
	}

	// One etcd member stops in the middle of a rollout: it finishes.
	must(0, "publish", arts["3.0.0"])
	id = strings.TrimSpace(must(0, "deploy", "hello", "3.0.0", "--to", "prod", "--batch", "1", "--detach", "--health-timeout", "30s").stdout)
	waitDeploying(t, &fleetServer{url: other.url, data: a.data, token: a.token}, id)
	cluster.Stop(2)
	waitDeployment(t, &fleetServer{url: other.url, data: a.data, token: a.token}, id, 60*time.Second, "succeeded")

	// Two down: no quorum. The API says so with 503; the apps run on.
	cluster.Stop(1)
	r = cli("status")
	if r.code == 0 || !strings.Contains(r.stderr, "unavailable") {
		t.Fatalf("status without etcd quorum: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	t.Logf("without quorum: %s", strings.TrimSpace(r.stderr))
	if code := fleetHTTP(t, &fleetServer{url: other.url, data: a.data}, a.token, http.MethodGet, "/v1/status", ""); code != http.StatusServiceUnavailable {
		t.Errorf("GET /v1/status without etcd quorum: %d, want 503", code)
	}
	for _, ag := range agents {
		if !ag.alive() {
			t.Fatalf("%s exited while etcd had no quorum", ag.name)
		}
	}
	// Back: everything answers again.
	cluster.Restart(1)
	cluster.Restart(2)
	deadline = time.Now().Add(30 * time.Second)
	for {
		if r = cli("status", "-o", "json"); r.code == 0 && strings.Count(r.stdout, `"release": "v3-`) >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status after etcd came back: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitDeploying waits until deployment id deploys to a host: the rollout
// is under way, with a batch still to go.
func waitDeploying(t *testing.T, s *fleetServer, id string) {
	t.Helper()
	hc := fleetHTTPClient(t, s)
	testenv.WaitForValue(t, "deployment "+id+" to deploy to a host", 30*time.Second, func() (string, bool) {
		var d struct {
			State string
			Hosts map[string]struct{ State string }
		}
		if err := apiGet(hc, s, "/v1/deployments/"+id, &d); err != nil {
			return err.Error(), false
		}
		for _, h := range d.Hosts {
			if h.State == "deploying" {
				return "", true
			}
		}
		return fmt.Sprintf("%s %+v", d.State, d.Hosts), false
	})
}

// waitDeployment polls the API (which the CLI only follows live) until
// deployment id ends, failing unless it ends in state want.
func waitDeployment(t *testing.T, s *fleetServer, id string, within time.Duration, want string) {
	t.Helper()
	hc := fleetHTTPClient(t, s)
	deadline := time.Now().Add(within)
	var last string
	for time.Now().Before(deadline) {
		var d struct{ State, Error string }
		if err := apiGet(hc, s, "/v1/deployments/"+id, &d); err == nil {
			last = fmt.Sprintf("%s %s", d.State, d.Error)
			switch {
			case d.State == want:
				return
			case d.State != "running" && d.State != "waiting" && d.State != "":
				t.Fatalf("deployment %s ended %s, want %s: %s", id, d.State, want, d.Error)
			}
		} else {
			last = err.Error()
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("deployment %s not %s within %s; last: %s", id, want, within, last)
}
