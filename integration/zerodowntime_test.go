package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry/internal/agent/proxyd"
	"github.com/ferrydeploy/ferry/internal/testenv"
)

// helloApp writes an app around a prebuilt examples/hello binary whose web
// process owns port through the agent in the given upgrade mode.
func helloApp(t *testing.T, port int, mode string, scale int) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, "bin", "hello"), "../examples/hello/cmd/hello").CombinedOutput(); err != nil {
		t.Fatalf("build hello: %v\n%s", err, out)
	}
	yaml := fmt.Sprintf(`app: hello
build:
  command: "true"
include: [bin/]
processes:
  web:
    command: bin/hello
    port: %d
    upgrade: %s
    scale: %d
    stop_timeout: 5s
    health: {http: /healthz, interval: 100ms}
`, port, mode, scale)
	os.WriteFile(filepath.Join(dir, "ferry.yaml"), []byte(yaml), 0o644)
	return dir
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// load runs keep-alive GETs, keep-alive POSTs (never retried) and GETs on
// a new connection each until stop, counting failures and who answered.
type load struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       []string
	releases   map[string]int
	wg         sync.WaitGroup
}

func startLoad(url string, stop <-chan struct{}) *load {
	l := &load{releases: map[string]int{}}
	keepAlive := &http.Client{Timeout: 10 * time.Second}
	fresh := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	clients := []func() (*http.Response, error){
		func() (*http.Response, error) { return keepAlive.Get(url) },
		func() (*http.Response, error) {
			req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader([]byte("payload")))
			req.GetBody = nil // a POST must never be silently retried
			return keepAlive.Do(req)
		},
		func() (*http.Response, error) { return fresh.Get(url) },
	}
	for _, do := range clients {
		for range 2 {
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					resp, err := do()
					if err == nil {
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode != 200 {
							err = fmt.Errorf("status %s", resp.Status)
						}
					}
					l.mu.Lock()
					if err != nil {
						l.failed.Add(1)
						if len(l.errs) < 10 {
							l.errs = append(l.errs, err.Error())
						}
					} else {
						l.ok.Add(1)
						l.releases[resp.Header.Get("X-Release")]++
					}
					l.mu.Unlock()
				}
			}()
		}
	}
	return l
}

// TestZeroDowntimeUpgrades upgrades hello back and forth under load through
// the real agent binary, in proxy and handoff mode, and counts failed
// requests: there must be none.
func TestZeroDowntimeUpgrades(t *testing.T) {
	for _, tt := range []struct {
		mode  string
		scale int
	}{{"proxy", 1}, {"proxy", 2}, {"handoff", 1}, {"handoff", 2}} {
		t.Run(fmt.Sprintf("%s scale %d", tt.mode, tt.scale), func(t *testing.T) {
			port := freeTCPPort(t)
			dir := helloApp(t, port, tt.mode, tt.scale)
			var arts [2][2]string
			for k := range arts {
				arts[k][0], arts[k][1] = buildDir(t, dir, fmt.Sprintf("v%d", k+1))
			}
			root := t.TempDir()
			desired := filepath.Join(t.TempDir(), "desired.yaml")
			write := func(doc string) {
				os.WriteFile(desired+".tmp", []byte(doc), 0o644)
				os.Rename(desired+".tmp", desired)
			}
			deployEnv := func(k int, env string) {
				write(fmt.Sprintf("apps:\n  hello:\n    artifact: %s\n    sha256: %s\n    env: {%s}\n", arts[k][0], arts[k][1], env))
			}
			deploy := func(k int) { deployEnv(k, "") }
			deploy(0)
			startAgentBinary(t, root, desired, "--health-timeout", "3s")
			defer func() {
				write("apps: {}\n")
				waitStatus(t, root, "stopped", func(st agentStatus) bool { return len(st.Apps["hello"].Processes) == 0 })
			}()
			running := func(k int) func(agentStatus) bool {
				return func(st agentStatus) bool {
					a := st.Apps["hello"]
					if a.State != "running" || a.SHA256 != arts[k][1] || len(a.Processes) != tt.scale {
						return false
					}
					for _, p := range a.Processes {
						if p.Health != "healthy" {
							return false
						}
					}
					return true
				}
			}
			waitStatus(t, root, "v1 running", running(0))
			stop := make(chan struct{})
			l := startLoad(fmt.Sprintf("http://127.0.0.1:%d/", port), stop)
			upgrades := 4
			for i := 1; i <= upgrades; i++ {
				deploy(i % 2)
				waitStatus(t, root, fmt.Sprintf("upgrade %d", i), running(i%2))
			}
			// Bad releases: the old one keeps serving, the agent says why.
			last := upgrades % 2
			for _, bad := range []struct{ env, why string }{
				{"HELLO_CRASH: '1'", "exited before it was ready"},
				{"HELLO_NOT_READY: '1'", "not ready after 3s"},
			} {
				if tt.scale > 1 {
					break // the scale-1 runs cover bad releases
				}
				deployEnv(1-last, bad.env)
				waitStatus(t, root, bad.env+" rejected: "+bad.why, func(st agentStatus) bool {
					return st.Apps["hello"].State == "failed" && strings.Contains(st.Apps["hello"].Error, bad.why)
				})
				waitStatus(t, root, "old release back", func(st agentStatus) bool {
					a := st.Apps["hello"]
					return a.SHA256 == arts[last][1] && len(a.Processes) == tt.scale && a.Processes[0].Health == "healthy"
				})
			}
			// Two agent self-upgrades under the same load: the apps keep
			// their pids, the agent gets a new one, no request fails.
			if tt.scale == 1 {
				before := status(t, root)
				appPid := before.Apps["hello"].Processes[0].PID
				for range 2 {
					r := ferry(t, "", nil, "agent", "upgrade", "--root", root)
					if r.code != 0 || !strings.Contains(r.stdout, "agent upgraded") {
						t.Fatalf("agent upgrade: exit %d\n%s%s", r.code, r.stdout, r.stderr)
					}
				}
				after := status(t, root)
				t.Cleanup(func() { syscall.Kill(after.Agent, syscall.SIGKILL) })
				if after.Agent == before.Agent {
					t.Errorf("agent pid %d did not change", after.Agent)
				}
				if got := after.Apps["hello"].Processes[0].PID; got != appPid {
					t.Errorf("the app's pid changed from %d to %d across agent upgrades", appPid, got)
				}
			}
			// The load runs on past the last change: answers after it count.
			n := l.ok.Load() + l.failed.Load()
			testenv.WaitFor(t, "20 more requests after the last change", 10*time.Second, func() bool { return l.ok.Load()+l.failed.Load() >= n+20 })
			close(stop)
			l.wg.Wait()
			t.Logf("%d requests ok, %d failed, answered by %v", l.ok.Load(), l.failed.Load(), l.releases)
			if l.failed.Load() > 0 {
				t.Errorf("%d requests failed during %d upgrades, e.g. %s", l.failed.Load(), upgrades, strings.Join(l.errs, "; "))
			}
			if len(l.releases) < 2 {
				t.Errorf("requests were answered by %v: want both releases", l.releases)
			}
		})
	}
}

// listenSockets counts the listening TCP sockets on port, whoever holds
// them: an agent owns a port with exactly one.
func listenSockets(port int) int {
	// This thread's view of the network, not /proc/net (the process's
	// main thread's): a test that entered a host's namespace on a locked
	// thread may have left the main thread there.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	n := 0
	for _, name := range []string{"/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"} {
		b, _ := os.ReadFile(name)
		for i, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if i > 0 && len(f) > 3 && f[3] == "0A" && strings.HasSuffix(f[1], fmt.Sprintf(":%04X", port)) {
				n++
			}
		}
	}
	return n
}

// TestAgentRestartUnderLoad stops the real agent with SIGTERM (what
// systemctl restart sends) and kills it with SIGKILL, starting it again
// each time, under load, in proxy and in handoff mode, then upgrades
// through the restarted agent. No request may fail, and none may hang:
// each restarted agent is asked for 40 new connections, each answered
// within a second. The apps keep their pids and the port keeps one
// listening socket: no orphan beside it.
func TestAgentRestartUnderLoad(t *testing.T) {
	for _, mode := range []string{"proxy", "handoff"} {
		t.Run(mode, func(t *testing.T) {
			port := freeTCPPort(t)
			dir := helloApp(t, port, mode, 2)
			var arts [2][2]string
			for k := range arts {
				arts[k][0], arts[k][1] = buildDir(t, dir, fmt.Sprintf("v%d", k+1))
			}
			root := t.TempDir()
			desired := filepath.Join(t.TempDir(), "desired.yaml")
			write := func(doc string) {
				os.WriteFile(desired+".tmp", []byte(doc), 0o644)
				os.Rename(desired+".tmp", desired)
			}
			deploy := func(k int) {
				write(fmt.Sprintf("apps:\n  hello:\n    artifact: %s\n    sha256: %s\n", arts[k][0], arts[k][1]))
			}
			deploy(0)
			agent := startAgentBinary(t, root, desired, "--health-timeout", "10s")
			defer func() {
				write("apps: {}\n")
				waitStatus(t, root, "stopped", func(st agentStatus) bool { return len(st.Apps["hello"].Processes) == 0 })
			}()
			running := func(k int) func(agentStatus) bool {
				return func(st agentStatus) bool {
					a := st.Apps["hello"]
					if a.State != "running" || a.SHA256 != arts[k][1] || len(a.Processes) != 2 {
						return false
					}
					for _, p := range a.Processes {
						if p.Health != "healthy" {
							return false
						}
					}
					return true
				}
			}
			pidsOf := func(st agentStatus) string {
				var out []int
				for _, p := range st.Apps["hello"].Processes {
					out = append(out, p.PID)
				}
				return fmt.Sprint(out)
			}
			before := pidsOf(waitStatus(t, root, "v1 running", running(0)))
			url := fmt.Sprintf("http://127.0.0.1:%d/", port)
			stop := make(chan struct{})
			l := startLoad(url, stop)
			time.Sleep(300 * time.Millisecond)
			// The third agent runs a new ferry binary (a copy: another
			// file), as after a package upgrade and systemctl restart: it
			// upgrades the proxy process the first one started to itself.
			newBin := filepath.Join(t.TempDir(), "ferry")
			if b, err := os.ReadFile(ferryBin); err != nil || os.WriteFile(newBin, b, 0o755) != nil {
				t.Fatal("copy the ferry binary:", err)
			}
			proxyPID := func() int {
				in, err := proxyd.NewClient(proxyd.Options{Root: root}).Info(context.Background())
				if err != nil {
					t.Fatalf("the proxy process does not answer: %v", err)
				}
				return in.PID
			}
			firstProxy := proxyPID()
			for i, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL, syscall.SIGTERM, syscall.SIGKILL} {
				agent.Process.Signal(sig)
				agent.Wait()
				time.Sleep(300 * time.Millisecond) // no agent at all, for a while
				if n := listenSockets(port); n != 1 {
					t.Errorf("after %v, port %d has %d listening sockets, want 1", sig, port, n)
				}
				bin := ferryBin
				if i >= 1 {
					bin = newBin
				}
				agent = startAgentBinaryAt(t, bin, root, desired, "--health-timeout", "10s")
				st := waitStatus(t, root, fmt.Sprintf("adopted after %v", sig), func(st agentStatus) bool {
					return st.Agent == agent.Process.Pid && running(0)(st)
				})
				if got := pidsOf(st); got != before {
					t.Fatalf("after %v and a restart the instances are %s, want the same %s", sig, got, before)
				}
				if n := listenSockets(port); n != 1 {
					t.Errorf("after %v and a restart, port %d has %d listening sockets, want 1", sig, port, n)
				}
				fresh := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
				hung := 0
				for range 40 {
					resp, err := fresh.Get(url)
					if err != nil {
						hung++
						continue
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				if hung > 0 {
					t.Errorf("after %v and a restart, %d of 40 new connections got no answer within 1s", sig, hung)
				}
				switch pid := proxyPID(); {
				case i == 0 && pid != firstProxy:
					t.Errorf("the proxy process changed from pid %d to %d across an agent restart on the same binary", firstProxy, pid)
				case i == 1 && pid == firstProxy:
					t.Errorf("an agent on a new binary left the proxy process (pid %d) on the old one", pid)
				}
			}
			deploy(1)
			waitStatus(t, root, "v2 running", running(1))
			time.Sleep(300 * time.Millisecond)
			close(stop)
			l.wg.Wait()
			t.Logf("%d requests ok, %d failed, answered by %v", l.ok.Load(), l.failed.Load(), l.releases)
			if l.failed.Load() > 0 {
				t.Errorf("%d requests failed across agent restarts, e.g. %s", l.failed.Load(), strings.Join(l.errs, "; "))
			}
			if len(l.releases) < 2 {
				t.Errorf("requests were answered by %v: want both releases", l.releases)
			}
		})
	}
}
