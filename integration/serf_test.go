package integration

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry/internal/testenv"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestSerfEventDeploys runs two real serf agents on loopback; a user event
// carrying a manifest path makes the second agent's handler, ferry apply -,
// deploy it.
func TestSerfEventDeploys(t *testing.T) {
	serf := testenv.NeedCommand(t, "serf")
	art, sum := buildHello(t, "v1")
	dest := filepath.Join(t.TempDir(), "hello")
	m := writeManifest(t, fmt.Sprintf("src: %s\nchecksum: %s\ndest: %s\nsync_strategy: release\n", art, sum, dest))
	b1, b2, r1 := freePort(t), freePort(t), freePort(t)
	logs := t.TempDir()
	start := func(name string, bind, rpc int, extra ...string) {
		args := append([]string{"agent", "-node=" + name, fmt.Sprintf("-bind=127.0.0.1:%d", bind), "-rpc-addr=127.0.0.1:" + fmt.Sprint(rpc)}, extra...)
		cmd := exec.Command(serf, args...)
		f, _ := os.Create(filepath.Join(logs, name+".log"))
		cmd.Stdout, cmd.Stderr = f, f
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); f.Close() })
	}
	start("a", b1, r1)
	// b joins a at start, so a must be listening first.
	for ready := time.Now().Add(15 * time.Second); ; {
		if exec.Command(serf, "members", "-rpc-addr=127.0.0.1:"+fmt.Sprint(r1)).Run() == nil {
			break
		}
		if time.Now().After(ready) {
			t.Fatal("serf agent a did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	start("b", b2, freePort(t), "-event-handler", "user:deploy="+ferryBin+" apply -", fmt.Sprintf("-join=127.0.0.1:%d", b1))
	deadline := time.Now().Add(30 * time.Second)
	sent := false
	var lastSent time.Time
	for time.Now().Before(deadline) {
		// Gossip may drop an event sent while the cluster settles; ferry
		// apply is idempotent, so send again until it lands.
		if time.Since(lastSent) > 3*time.Second {
			out, err := exec.Command(serf, "members", "-rpc-addr=127.0.0.1:"+fmt.Sprint(r1)).CombinedOutput()
			if err == nil && len(out) > 0 && countAlive(string(out)) == 2 {
				if out, err := exec.Command(serf, "event", "-rpc-addr=127.0.0.1:"+fmt.Sprint(r1), "deploy", m).CombinedOutput(); err != nil {
					t.Fatalf("serf event: %v %s", err, out)
				}
				sent, lastSent = true, time.Now()
			}
		}
		if _, err := os.Stat(filepath.Join(dest, "current", "bin", "hello")); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	b, _ := os.ReadFile(filepath.Join(logs, "b.log"))
	t.Fatalf("the serf event did not deploy (event sent: %v); agent b log:\n%s", sent, b)
}

func countAlive(members string) int {
	return strings.Count(members, "alive")
}
