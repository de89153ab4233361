package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fleetNet puts each agent of the fleet test in its own network namespace,
// joined to the host by a bridge the server listens on, so agents reach the
// server over a real interface and share no loopback. Where namespaces
// cannot be made (not root, no ip(8), a sandbox), every agent runs on the
// host's loopback: the apps' $PORTs are free ports the agents pick, so
// several agents on one loopback do not collide.
type fleetNet struct {
	serverIP string   // the address the server listens on
	ns       []string // per agent; nil on loopback
	veths    []string // per agent, the host's end of its link
	undo     []string // ip(8) argument lists that take it down, in order
}

// fleetSeq numbers the fleets a test process makes.
var fleetSeq atomic.Int32

// newFleetNet makes n namespaces, or returns a loopback fleetNet (and logs
// why) when it cannot.
func newFleetNet(t *testing.T, n int) *fleetNet {
	t.Helper()
	lo := &fleetNet{serverIP: "127.0.0.1"}
	if os.Getenv("FERRY_TEST_NO_NETNS") != "" {
		t.Log("FERRY_TEST_NO_NETNS set: agents share the host's loopback")
		return lo
	}
	if os.Geteuid() != 0 {
		t.Log("not root: agents share the host's loopback instead of network namespaces")
		return lo
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Log("no ip(8): agents share the host's loopback instead of network namespaces")
		return lo
	}
	subnet, ok := freeSubnet()
	if !ok {
		t.Log("no free 10.213.x.0/24 subnet: agents share the host's loopback")
		return lo
	}
	// Unique per fleet, not only per test process: a namespace whose
	// processes outlive a test keeps its veth until they are gone.
	id := strconv.Itoa(os.Getpid()) + "x" + strconv.Itoa(int(fleetSeq.Add(1)))
	f := &fleetNet{serverIP: subnet + ".1"}
	br := "fy" + id + "b"
	ip := func(args ...string) error {
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
		}
		return nil
	}
	setup := func() error {
		if err := ip("link", "add", br, "type", "bridge"); err != nil {
			return err
		}
		f.undo = append(f.undo, "link del "+br)
		if err := ip("addr", "add", f.serverIP+"/24", "dev", br); err != nil {
			return err
		}
		if err := ip("link", "set", br, "up"); err != nil {
			return err
		}
		for i := 1; i <= n; i++ {
			ns := fmt.Sprintf("ferry-fleet-%s-%d", id, i)
			veth := fmt.Sprintf("fy%sh%d", id, i)
			if err := ip("netns", "add", ns); err != nil {
				return err
			}
			// Deleting the namespace deletes its end of the veth pair, and
			// so the pair.
			f.undo = append([]string{"netns del " + ns}, f.undo...)
			f.ns = append(f.ns, ns)
			f.veths = append(f.veths, veth)
			for _, args := range [][]string{
				{"link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns},
				{"link", "set", veth, "master", br},
				{"link", "set", veth, "up"},
				{"-n", ns, "addr", "add", fmt.Sprintf("%s.%d/24", subnet, 10+i), "dev", "eth0"},
				{"-n", ns, "link", "set", "eth0", "up"},
				{"-n", ns, "link", "set", "lo", "up"},
			} {
				if err := ip(args...); err != nil {
					return err
				}
			}
		}
		// A firewall may drop what comes in on the bridge: try it.
		return probeNetns("/run/netns/"+f.ns[0], f.serverIP)
	}
	if err := setup(); err != nil {
		f.down()
		t.Logf("network namespaces do not work here (%v): agents share the host's loopback", err)
		return lo
	}
	t.Cleanup(f.down)
	t.Logf("agents run in network namespaces %s, server on %s", strings.Join(f.ns, ", "), f.serverIP)
	return f
}

func (f *fleetNet) down() {
	for _, args := range f.undo {
		exec.Command("ip", strings.Fields(args)...).Run()
	}
	f.undo = nil
}

// command is how agent i (from 0) runs: inside its namespace, if any.
func (f *fleetNet) command(i int, args ...string) *exec.Cmd {
	if f.ns == nil {
		return exec.Command(ferryBin, args...)
	}
	// ip netns exec execs ferry, so the pid is the agent's own.
	return exec.Command("ip", append([]string{"netns", "exec", f.ns[i], ferryBin}, args...)...)
}

// freeSubnet picks a 10.213.x.0/24 no interface of this host is on.
func freeSubnet() (string, bool) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", false
	}
	for k := range 200 {
		s := fmt.Sprintf("10.213.%d", (os.Getpid()+k)%200+20)
		_, cidr, _ := net.ParseCIDR(s + ".0/24")
		used := false
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && (cidr.Contains(ipn.IP) || ipn.Contains(cidr.IP)) {
				used = true
			}
		}
		if !used {
			return s, true
		}
	}
	return "", false
}

// probeNetns connects from the namespace at nsPath to a listener on ip.
func probeNetns(nsPath, ip string) error {
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return err
	}
	defer l.Close()
	go func() {
		if c, err := l.Accept(); err == nil {
			c.Close()
		}
	}()
	errc := make(chan error, 1)
	go func() {
		// This thread enters the namespace and is never unlocked, so the
		// runtime discards it with the goroutine.
		runtime.LockOSThread()
		fd, err := syscall.Open(nsPath, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer syscall.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		c, err := net.DialTimeout("tcp", l.Addr().String(), 3*time.Second)
		if err == nil {
			c.Close()
		}
		errc <- err
	}()
	return <-errc
}

// fleetServer is a `ferry server` process.
type fleetServer struct {
	url, token, ca string
	data           string
	cmd            *exec.Cmd
	log            string
}

// startFleetServer starts ferry server on ip and a port of its choosing,
// and reads the admin token, URL and CA pin from what it prints at first
// start.
func startFleetServer(t *testing.T, ip string, extra ...string) *fleetServer {
	t.Helper()
	s := &fleetServer{data: t.TempDir()}
	logDir := t.TempDir()
	s.log = filepath.Join(logDir, "server.log")
	out, err := os.Create(filepath.Join(logDir, "server.out"))
	if err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(s.log)
	if err != nil {
		t.Fatal(err)
	}
	s.cmd = exec.Command(ferryBin, append([]string{"server", "--data", s.data, "--listen", net.JoinHostPort(ip, "0")}, extra...)...)
	s.cmd.Stdout, s.cmd.Stderr = out, logf
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			s.cmd.Process.Kill()
			<-done
			t.Errorf("ferry server ignored SIGTERM for 10s")
		}
		out.Close()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(s.log)
			t.Logf("server log:\n%s", tail(b, 200))
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		b, _ := os.ReadFile(out.Name())
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			// ferry login URL --token T --ca-sha256 H
			f := strings.Fields(sc.Text())
			if len(f) == 7 && f[0] == "ferry" && f[1] == "login" && f[3] == "--token" && f[5] == "--ca-sha256" {
				s.url, s.token, s.ca = f[2], f[4], f[6]
			}
		}
		if s.url != "" {
			break
		}
		select {
		case <-done:
			b, _ := os.ReadFile(s.log)
			t.Fatalf("ferry server exited at start:\n%s", b)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("ferry server printed no login line within 15s:\n%s", b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if b, err := os.ReadFile(filepath.Join(s.data, "admin.token")); err != nil || strings.TrimSpace(string(b)) != s.token {
		t.Fatalf("DATA/admin.token %q (%v) is not the token the server printed, %q", b, err, s.token)
	}
	return s
}

// fleetAgent is one `ferry agent` process joined to the server; restart
// runs it again on the same root.
type fleetAgent struct {
	t    *testing.T
	net  *fleetNet
	i    int
	name string
	root string
	join string // given in $FERRY_JOIN_TOKEN, as ferry agent join-token says
	args []string
	log  *os.File
	cmd  *exec.Cmd
	done chan struct{}
}

func startFleetAgent(t *testing.T, fn *fleetNet, i int, s *fleetServer, join string) *fleetAgent {
	t.Helper()
	return startFleetAgentAt(t, fn, i, s, join, t.TempDir())
}

// startFleetAgentAt is startFleetAgent with its root at root.
func startFleetAgentAt(t *testing.T, fn *fleetNet, i int, s *fleetServer, join, root string) *fleetAgent {
	t.Helper()
	a := &fleetAgent{t: t, net: fn, i: i, name: fmt.Sprintf("web-%d", i+1), root: root, join: join}
	a.args = []string{"agent", "--server", s.url, "--ca-sha256", s.ca,
		"--root", a.root, "--name", a.name, "--health-timeout", "10s"}
	var err error
	if a.log, err = os.Create(filepath.Join(t.TempDir(), a.name+".log")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		a.kill()
		// The apps outlive their agent by design: stop them too.
		killUnder(a.root)
		a.log.Close()
		if t.Failed() {
			b, _ := os.ReadFile(a.log.Name())
			t.Logf("%s log:\n%s", a.name, tail(b, 80))
		}
	})
	a.start()
	return a
}

func (a *fleetAgent) start() {
	a.t.Helper()
	fmt.Fprintf(a.log, "---- start %s\n", time.Now().Format(time.RFC3339Nano))
	a.cmd = a.net.command(a.i, a.args...)
	a.cmd.Env = append(os.Environ(), "FERRY_JOIN_TOKEN="+a.join)
	a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	if err := a.cmd.Start(); err != nil {
		a.t.Fatal(err)
	}
	a.done = make(chan struct{})
	cmd, done := a.cmd, a.done
	go func() { cmd.Wait(); close(done) }()
}

// kill SIGKILLs the agent (not its apps) and waits for it.
func (a *fleetAgent) kill() {
	if a.cmd == nil {
		return
	}
	a.cmd.Process.Signal(syscall.SIGKILL)
	<-a.done
	a.cmd = nil
}

// alive says whether the agent process still runs.
func (a *fleetAgent) alive() bool {
	if a.cmd == nil {
		return false
	}
	select {
	case <-a.done:
		return false
	default:
		return true
	}
}

// fleetRun runs the ferry CLI with env laid over the test's environment.
// Unlike ferry() it does not fail the test, so goroutines may use it.
func fleetRun(ctx context.Context, env []string, args ...string) (result, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, ferryBin, args...)
	cmd.WaitDelay = 5 * time.Second
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code, err = ee.ExitCode(), nil
	}
	if err == nil && ctx.Err() != nil {
		err = fmt.Errorf("ferry %s did not finish within 2 minutes", strings.Join(args, " "))
	}
	return result{code, out.String(), errb.String()}, err
}

// Shapes of the CLI's JSON output that the fleet test reads.
type (
	fleetStatus struct {
		Hosts []fleetHost `json:"hosts"`
	}
	fleetHost struct {
		Name     string               `json:"name"`
		Groups   []string             `json:"groups"`
		LastSeen time.Time            `json:"last_seen"`
		Lost     bool                 `json:"lost"`
		Apps     map[string]*fleetApp `json:"apps"`
	}
	fleetApp struct {
		Release   string `json:"release"`
		Label     string `json:"label"`
		SHA256    string `json:"sha256"`
		State     string `json:"state"`
		Error     string `json:"error"`
		Processes []struct {
			Process  string `json:"process"`
			Instance int    `json:"instance"`
			State    string `json:"state"`
			PID      int    `json:"pid"`
			Health   string `json:"health"`
		} `json:"processes"`
	}
	fleetRelease struct {
		Number  int    `json:"number"`
		SHA256  string `json:"sha256"`
		Version string `json:"version"`
		By      string `json:"by"`
		Outcome string `json:"outcome"`
	}
	fleetEvent struct {
		Who    string `json:"who"`
		From   string `json:"from"`
		Action string `json:"action"`
		Target string `json:"target"`
		Detail string `json:"detail"`
	}
)

func (s fleetStatus) host(name string) *fleetHost {
	for i := range s.Hosts {
		if s.Hosts[i].Name == name {
			return &s.Hosts[i]
		}
	}
	return nil
}

// runs says whether host reports app at release label, running, every
// process healthy.
func (h *fleetHost) runs(app, label string) bool {
	if h == nil || h.Apps[app] == nil {
		return false
	}
	a := h.Apps[app]
	if a.Label != label || a.State != "running" || len(a.Processes) == 0 {
		return false
	}
	for _, p := range a.Processes {
		if p.PID == 0 || p.Health != "healthy" {
			return false
		}
	}
	return true
}

func (h *fleetHost) String() string {
	if h == nil {
		return "<no such host>"
	}
	b, _ := json.Marshal(h.Apps)
	return fmt.Sprintf("%s lost=%v last_seen=%s %s", h.Name, h.Lost, h.LastSeen.Format(time.RFC3339Nano), b)
}

// tail is the last n lines of b.
func tail(b []byte, n int) []byte {
	lines := bytes.SplitAfter(b, []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return bytes.Join(lines, nil)
}

// buildHelloBin builds examples/hello into dir/bin/hello, for app dirs that
// pack a prebuilt binary (fleetYAML).
func buildHelloBin(t *testing.T, goBin, dir string) {
	t.Helper()
	if out, err := exec.Command(goBin, "build", "-o", filepath.Join(dir, "bin", "hello"), "../examples/hello/cmd/hello").CombinedOutput(); err != nil {
		t.Fatalf("build hello: %v\n%s", err, out)
	}
}

// fleetYAML is the ferry.yaml of a hello that packs bin/ and checks its
// health by running check, with curl, in the release dir: hello has no
// port of its own to give an http check.
func fleetYAML(check, extra string) string {
	return fmt.Sprintf(`app: hello
build:
  command: "true"
include: [bin/]
processes:
  web:
    command: bin/hello
    stop_timeout: 5s
    health: {exec: "%scurl -fsS -m 1 -o /dev/null http://127.0.0.1:$PORT/healthz", interval: 100ms%s}
`, check, extra)
}

// fleetCLI gives the test a CLI configuration of its own (no FERRY_*
// from the environment) and returns must, which runs ferry and fails the
// test unless it exits with code.
func fleetCLI(t *testing.T) func(code int, args ...string) result {
	t.Helper()
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	for _, k := range []string{"FERRY_SERVER", "FERRY_TOKEN", "FERRY_CA_SHA256"} {
		t.Setenv(k, "")
	}
	return func(code int, args ...string) result {
		t.Helper()
		r, err := fleetRun(context.Background(), nil, args...)
		if err != nil {
			t.Fatal(err)
		}
		if r.code != code {
			t.Fatalf("ferry %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, code, r.stdout, r.stderr)
		}
		return r
	}
}

// joinAgents logs the CLI in to srv and starts an agent per root (a new
// temp dir for ""), joined to group prod as web-1, web-2, …, and waits
// until the server lists them all.
func joinAgents(t *testing.T, must func(int, ...string) result, fn *fleetNet, srv *fleetServer, roots ...string) []*fleetAgent {
	t.Helper()
	must(0, "login", srv.url, "--token", srv.token, "--ca-sha256", srv.ca)
	var tok struct{ Secret string }
	if err := json.Unmarshal([]byte(must(0, "agent", "join-token", "--group", "prod", "-o", "json").stdout), &tok); err != nil {
		t.Fatal(err)
	}
	var agents []*fleetAgent
	for i, root := range roots {
		if root == "" {
			root = t.TempDir()
		}
		agents = append(agents, startFleetAgentAt(t, fn, i, srv, tok.Secret, root))
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := must(0, "status", "-o", "json").stdout
		joined := 0
		for _, a := range agents {
			if strings.Contains(st, `"`+a.name+`"`) {
				joined++
			}
		}
		if joined == len(agents) {
			return agents
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d agents joined within 20s", joined, len(agents))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// envCount is the positive count in environment variable name (the long
// versions of the reliability tests), or def when it is unset.
func envCount(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive count", name, v)
	}
	return n
}
