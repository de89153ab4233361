package main

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry/internal/testenv"
)

func TestMain(m *testing.M) {
	// The reuseport control re-executes the running binary: here, the test.
	if addr := os.Getenv(envServe); addr != "" {
		serveReuseport(addr, os.Getenv(envRelease))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// need skips the test when go or Linux is missing, and fails it in CI,
// where both must be there.
func need(t *testing.T) {
	t.Helper()
	why := ""
	if runtime.GOOS != "linux" {
		why = "the harness reads /proc and uses SO_REUSEPORT: Linux only"
	} else if _, err := exec.LookPath("go"); err != nil {
		why = "go is not on $PATH: the harness builds ferry and examples/hello"
	} else if _, err := findRepo(""); err != nil {
		why = err.Error()
	}
	if why == "" {
		return
	}
	testenv.SkipUnlessCI(t, "%s", why)
}

// serveRaw accepts conns on loopback and hands each to fn.
func serveRaw(t *testing.T, fn func(net.Conn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go fn(c)
		}
	}()
	return l.Addr().String()
}

func readRequest(c net.Conn) bool {
	_, err := http.ReadRequest(bufio.NewReader(c))
	return err == nil
}

// TestClasses sends each client's request to servers that fail in one way
// each, and checks the class the harness counts it in.
func TestClasses(t *testing.T) {
	closedPort := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		return addr
	}()
	reply := func(status int) func(net.Conn) {
		return func(c net.Conn) {
			defer c.Close()
			if readRequest(c) {
				io.WriteString(c, "HTTP/1.1 "+strconv.Itoa(status)+" x\r\nX-Release: v7\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
			}
		}
	}
	tests := []struct {
		name, addr, want string
	}{
		{"nothing listens", closedPort, classRefused},
		{"reset after the request", serveRaw(t, func(c net.Conn) {
			readRequest(c)
			c.(*net.TCPConn).SetLinger(0) // close with RST
			c.Close()
		}), classReset},
		{"closed after the request", serveRaw(t, func(c net.Conn) { readRequest(c); c.Close() }), classEOF},
		{"never answers", serveRaw(t, func(c net.Conn) { readRequest(c); time.Sleep(2 * time.Second); c.Close() }), classTimeout},
		{"503", serveRaw(t, reply(503)), class5xx},
		{"404", serveRaw(t, reply(404)), classOther},
		{"200", serveRaw(t, reply(200)), classOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newLoad(loadConfig{Addr: tt.addr, Timeout: 300 * time.Millisecond})
			for _, c := range []string{cliGetNew, cliRawTCP} {
				l.one(c, true)
			}
			stats, _ := l.stop()
			for _, c := range []string{cliGetNew, cliRawTCP} {
				st := stats[c]
				if st.Requests != 1 || st.Classes[tt.want] != 1 {
					t.Errorf("%s: classes %v, want one %s; samples %v", c, st.Classes, tt.want, st.Samples)
				}
				if tt.want == classOK && st.Versions["v7"] != 1 {
					t.Errorf("%s: versions %v, want v7", c, st.Versions)
				}
			}
		})
	}
}

// TestPOSTIsNotRetried checks what the POST client's doc comment says: a
// server that closes a kept-alive conn after reading the second request
// on it makes net/http retry the GET on a new conn (counted as retried,
// answered ok), but the POST fails as it would in a browser.
func TestPOSTIsNotRetried(t *testing.T) {
	addr := serveRaw(t, func(c net.Conn) {
		defer c.Close()
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Release: v1\r\nContent-Length: 3\r\n\r\nok\n")
		http.ReadRequest(br) // the second request on this conn: close without an answer
	})
	l := newLoad(loadConfig{Addr: addr, Timeout: 2 * time.Second})
	for range 2 {
		l.one(cliGetKA, false)
		l.one(cliPostKA, false)
	}
	stats, _ := l.stop()
	if g := stats[cliGetKA]; g.Classes[classOK] != 2 || g.Retries != 1 {
		t.Errorf("GET keep-alive: classes %v, retried %d; want 2 ok, 1 retried", g.Classes, g.Retries)
	}
	if p := stats[cliPostKA]; p.Classes[classOK] != 1 || p.Classes[classEOF] != 1 || p.Retries != 0 {
		t.Errorf("POST keep-alive: classes %v, retried %d; want 1 ok, 1 eof, none retried; samples %v", p.Classes, p.Retries, p.Samples)
	}
}

// TestSmoke is the short version of the benchmark that CI runs: 20
// upgrades per subject (every 4th a bad release: crash at boot, never
// ready, ignore SIGTERM — handoff gets the first two), one agent
// self-upgrade, one agent SIGTERM and one SIGKILL (each followed by a new
// agent), under the full load. The agent's proxy and handoff modes
// must lose nothing and answer the WebSocket; the negative controls,
// stop-start and two SO_REUSEPORT servers, must be seen failing; in each,
// the tallies must add up.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the agent through 20 upgrades per mode under load (~3 min)")
	}
	need(t)
	cfg := config{
		Ferry:         os.Getenv("ZERODOWNTIME_FERRY"), // default: build ./cmd/ferry
		Modes:         []string{"proxy", "handoff", "stop-start"},
		Controls:      []string{"reuseport"},
		Upgrades:      20,
		AgentUpgrades: 1,
		AgentRestarts: 1,
		AgentKills:    1,
		Bad:           true,
		Scale:         1,
		Runs:          1,
		Load:          loadConfig{Rate: 200, Workers: 2, SlowWorkers: 2, SlowMS: 1500, Timeout: 5 * time.Second},
		SpacingMin:    200 * time.Millisecond,
		SpacingMax:    400 * time.Millisecond,
		HealthTimeout: 10 * time.Second,
		Work:          t.TempDir(),
		Seed:          1,
	}
	// The run builds ferry and hello first, which on a busy machine (the
	// test command compiles other packages beside it) took most of a
	// fixed 8 minutes: bound it by the test's own deadline instead.
	deadline := time.Now().Add(8 * time.Minute)
	if d, ok := t.Deadline(); ok {
		deadline = d.Add(-30 * time.Second)
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	var log strings.Builder
	res, err := run(ctx, cfg, &log)
	if err != nil {
		t.Fatalf("harness: %v\n%s", err, log.String())
	}
	if !res.AsExpected {
		t.Errorf("a subject did not end as expected")
	}
	for _, s := range res.Subjects {
		if !s.AsExpected {
			t.Errorf("%s: verdict %s, expected to %s", s.Name, s.Verdict, s.Expect)
		}
		for _, r := range s.Runs {
			if len(r.Upgrades) != cfg.Upgrades || len(r.Errors) > 0 || len(r.Leaked) > 0 {
				t.Errorf("%s: %d upgrades, errors %q, leaked %q", s.Name, len(r.Upgrades), r.Errors, r.Leaked)
			}
			if s.Expect == "fail" && r.failures() == 0 {
				t.Errorf("%s lost no request: the harness cannot see failures", s.Name)
			}
			for name, c := range r.Clients {
				sum, served := 0, 0
				for _, n := range c.Classes {
					sum += n
				}
				for _, n := range c.Versions {
					served += n
				}
				if sum != c.Requests || served != c.Classes[classOK] {
					t.Errorf("%s %s: %d requests but classes add up to %d; %d ok but versions add up to %d", s.Name, name, c.Requests, sum, c.Classes[classOK], served)
				}
			}
			if strings.HasPrefix(s.Name, "agent") && (r.FDsBefore <= 0 || r.FDsAfter <= 0) {
				t.Errorf("%s: agent fds %d → %d not measured", s.Name, r.FDsBefore, r.FDsAfter)
			}
			if strings.HasPrefix(s.Name, "agent") && len(r.AgentUpgrades) != cfg.AgentUpgrades {
				t.Errorf("%s: agent upgraded itself %d times, want %d", s.Name, len(r.AgentUpgrades), cfg.AgentUpgrades)
			}
			if strings.HasPrefix(s.Name, "agent") && len(r.AgentRestarts) != cfg.AgentRestarts+cfg.AgentKills {
				t.Errorf("%s: agent stopped or killed %d times, want %d", s.Name, len(r.AgentRestarts), cfg.AgentRestarts+cfg.AgentKills)
			}
			if ws := r.Clients[cliWS]; strings.HasPrefix(s.Name, "agent") && (ws == nil || !ws.Supported || ws.Classes[classOK] == 0) {
				t.Errorf("%s: the WebSocket client was not answered: %+v", s.Name, ws)
			}
		}
	}
	if t.Failed() {
		var b strings.Builder
		writeReport(&b, cfg, res)
		t.Logf("report:\n%s\nlog:\n%s", b.String(), log.String())
	}
}

// TestAgentEvents checks how the agent's own events spread over a run:
// each as many times as asked, interleaved, none before the first upgrade
// or after the last.
func TestAgentEvents(t *testing.T) {
	for _, tt := range []struct{ upgrades, self, restarts, kills int }{
		{100, 2, 2, 2}, {20, 1, 1, 1}, {100, 2, 0, 0}, {5, 0, 3, 3}, {10, 0, 0, 0},
	} {
		got := agentEvents(tt.upgrades, tt.self, tt.restarts, tt.kills)
		count := map[string]int{}
		var order []string
		for k := 1; k <= tt.upgrades; k++ {
			for _, ev := range got[k] {
				count[ev]++
				order = append(order, ev)
			}
		}
		for k := range got {
			if k < 1 || k > tt.upgrades {
				t.Errorf("%+v: an event before upgrade %d, outside 1..%d", tt, k, tt.upgrades)
			}
		}
		if count[evUpgrade] != tt.self || count[evRestart] != tt.restarts || count[evKill] != tt.kills {
			t.Errorf("%+v: events %v", tt, count)
		}
		if tt.self > 0 && tt.restarts > 0 && tt.kills > 0 && (len(order) < 3 || order[0] != evUpgrade || order[1] != evRestart || order[2] != evKill) {
			t.Errorf("%+v: not interleaved: %v", tt, order)
		}
	}
	if got := agentEvents(100, 2, 0, 0); len(got[33]) != 1 || len(got[66]) != 1 {
		t.Errorf("two self-upgrades in 100 upgrades at %v, want before 33 and 66", got)
	}
}
