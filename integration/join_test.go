package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestAgentInstallJoins: the unit `ferry agent install --server` writes
// joins at its first start with the token it was given in the
// environment, which appears in no command line and no unit; the token
// file is gone once the agent holds its credential, and a restart (as
// systemd's Restart=always does) runs on the credential. A second
// machine under the same name with another group's token is refused.
func TestAgentInstallJoins(t *testing.T) {
	srv := startFleetServer(t, "127.0.0.1")
	must := fleetCLI(t)
	must(0, "login", srv.url, "--token", srv.token, "--ca-sha256", srv.ca)
	var tok struct{ Secret, Command string }
	if err := json.Unmarshal([]byte(must(0, "agent", "join-token", "--group", "prod", "-o", "json").stdout), &tok); err != nil {
		t.Fatal(err)
	}
	root, units := t.TempDir(), t.TempDir()
	r, err := fleetRun(t.Context(), []string{"FERRY_JOIN_TOKEN=" + tok.Secret},
		"agent", "install", "--server", srv.url, "--ca-sha256", srv.ca, "--root", root, "--name", "web-9", "--binary", ferryBin, "-o", units)
	if err != nil || r.code != 0 {
		t.Fatalf("agent install: %v %d\n%s%s", err, r.code, r.stdout, r.stderr)
	}
	unit, err := os.ReadFile(filepath.Join(units, "ferry-agent.service"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(unit), tok.Secret) {
		t.Fatalf("the unit holds the join token:\n%s", unit)
	}
	tokenFile := filepath.Join(root, "join.token")
	if fi, err := os.Stat(tokenFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("join token file: %v %v, want mode 0600", fi, err)
	}
	if sa, err := exec.LookPath("systemd-analyze"); err == nil {
		if out, err := exec.Command(sa, "verify", filepath.Join(units, "ferry-agent.service")).CombinedOutput(); err != nil {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
	}
	var execStart []string
	for _, line := range strings.Split(string(unit), "\n") {
		if v, ok := strings.CutPrefix(line, "ExecStart="); ok {
			execStart = strings.Fields(v) // no word of it needs quoting here
		}
	}
	if len(execStart) == 0 || !strings.Contains(strings.Join(execStart, " "), "--join-file "+tokenFile) {
		t.Fatalf("ExecStart %q does not pass the join token file", execStart)
	}
	logf, _ := os.Create(filepath.Join(t.TempDir(), "agent.log"))
	defer logf.Close()
	run := func() *exec.Cmd {
		cmd := exec.Command(execStart[0], execStart[1:]...)
		cmd.Env = os.Environ() // as systemd: no FERRY_JOIN_TOKEN
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	stop := func(cmd *exec.Cmd) {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}
	seen := func(after time.Time) bool {
		var st fleetStatus
		if json.Unmarshal([]byte(must(0, "status", "-o", "json").stdout), &st) != nil {
			return false
		}
		h := st.host("web-9")
		return h != nil && h.LastSeen.After(after)
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				b, _ := os.ReadFile(logf.Name())
				t.Fatalf("%s: not within 20s; agent log:\n%s", what, b)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	agent := run()
	waitFor("the unit's agent joined and reported", func() bool { return seen(time.Time{}) })
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", agent.Process.Pid))
	if strings.Contains(string(cmdline), tok.Secret) {
		t.Errorf("the agent's command line holds the join token")
	}
	waitFor("the join token file removed", func() bool { _, err := os.Stat(tokenFile); return os.IsNotExist(err) })
	stop(agent)

	restarted := time.Now()
	agent = run()
	defer stop(agent)
	waitFor("the restarted agent reports on its credential", func() bool { return seen(restarted) })

	// Another machine calling itself web-9, with a token of another group.
	var other struct{ Secret string }
	json.Unmarshal([]byte(must(0, "agent", "join-token", "--group", "staging", "-o", "json").stdout), &other)
	r, err = fleetRun(t.Context(), []string{"FERRY_JOIN_TOKEN=" + other.Secret},
		"agent", "--server", srv.url, "--ca-sha256", srv.ca, "--root", t.TempDir(), "--name", "web-9")
	if err != nil || r.code != 1 || !strings.Contains(r.stderr, "web-9 has already joined") {
		t.Errorf("a second machine joining as web-9: %v exit %d\n%s", err, r.code, r.stderr)
	}
	var st fleetStatus
	json.Unmarshal([]byte(must(0, "status", "-o", "json").stdout), &st)
	if h := st.host("web-9"); h == nil || strings.Join(h.Groups, ",") != "prod" {
		t.Errorf("web-9 after the refused takeover: %+v", h)
	}
}
