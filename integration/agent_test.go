package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// shellApp writes an app whose web process is a shell script, so the test
// needs no compiler, and returns its directory.
func shellApp(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "ferry.yaml"), []byte(`app: shell
build:
  command: "true"
include: [bin/]
processes:
  web:
    command: bin/serve
    scale: 2
    health: {exec: "test -n \"$FERRY_RELEASE\"", interval: 100ms}
  worker:
    command: bin/serve worker
`), 0o644)
	os.MkdirAll(filepath.Join(dir, "bin"), 0o755)
	os.WriteFile(filepath.Join(dir, "bin", "serve"), []byte("#!/bin/sh\necho \"$FERRY_PROCESS.$FERRY_INSTANCE of $FERRY_RELEASE up\"\nexec sleep 1000\n"), 0o755)
	return dir
}

type agentStatus struct {
	Agent int `json:"agent_pid"`
	Apps  map[string]struct {
		Release, State, SHA256, Error string
		Processes                     []struct {
			Process  string
			Instance int
			PID      int
			Health   string
			Restarts int
		}
	}
}

func status(t *testing.T, root string) agentStatus {
	t.Helper()
	r := ferry(t, "", nil, "agent", "status", "--root", root, "-o", "json")
	if r.code != 0 {
		t.Fatalf("agent status: exit %d\n%s", r.code, r.stderr)
	}
	var st agentStatus
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("agent status -o json: %v\n%s", err, r.stdout)
	}
	return st
}

func startAgentBinary(t *testing.T, root, desired string, extra ...string) *exec.Cmd {
	t.Helper()
	return startAgentBinaryAt(t, ferryBin, root, desired, extra...)
}

// startAgentBinaryAt is startAgentBinary with the ferry binary at bin.
func startAgentBinaryAt(t *testing.T, bin, root, desired string, extra ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"agent", "--root", root, "--desired", desired}, extra...)...)
	f, err := os.Create(filepath.Join(t.TempDir(), "agent.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		// A test that failed before stopping its apps must not leave them
		// running for the next tests and runs.
		killUnder(root)
		f.Close()
		if t.Failed() {
			b, _ := os.ReadFile(f.Name())
			t.Logf("agent log:\n%s", b)
		}
	})
	return cmd
}

func waitStatus(t *testing.T, root, what string, cond func(agentStatus) bool) agentStatus {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := status(t, root)
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30s: %+v", what, st)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func allHealthy(sum string, n int) func(agentStatus) bool {
	return func(st agentStatus) bool {
		a, ok := st.Apps["shell"]
		if !ok || a.State != "running" || a.SHA256 != sum || len(a.Processes) != n {
			return false
		}
		for _, p := range a.Processes {
			if p.PID == 0 || p.Health != "healthy" {
				return false
			}
		}
		return true
	}
}

// TestAgentSurvivesSIGKILL runs the real agent binary on a desired-state
// file, kills it with SIGKILL, starts it again and checks it adopted the
// same processes; then the app is scaled and removed through the file.
func TestAgentSurvivesSIGKILL(t *testing.T) {
	art, sum := buildDir(t, shellApp(t), "v1")
	root := t.TempDir()
	desired := filepath.Join(t.TempDir(), "desired.yaml")
	write := func(doc string) {
		tmp := desired + ".tmp"
		os.WriteFile(tmp, []byte(doc), 0o644)
		os.Rename(tmp, desired)
	}
	write(fmt.Sprintf("apps:\n  shell:\n    artifact: %s\n    sha256: %s\n", art, sum))
	agent := startAgentBinary(t, root, desired)
	defer func() {
		// Leave nothing running: empty the document, wait, stop the agent.
		write("apps: {}\n")
		waitStatus(t, root, "stopped", func(st agentStatus) bool { return len(st.Apps["shell"].Processes) == 0 })
	}()
	st := waitStatus(t, root, "running", allHealthy(sum, 3))
	var before []int
	for _, p := range st.Apps["shell"].Processes {
		before = append(before, p.PID)
	}

	agent.Process.Signal(syscall.SIGKILL)
	agent.Wait()
	// With no agent, status reads state.json and says so.
	r := ferry(t, "", nil, "agent", "status", "--root", root)
	if r.code != 0 || !strings.Contains(r.stderr, "no agent answers") || !strings.Contains(r.stdout, "web.2") {
		t.Fatalf("status without an agent: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	startAgentBinary(t, root, desired)
	st = waitStatus(t, root, "adopted", allHealthy(sum, 3))
	var after []int
	for _, p := range st.Apps["shell"].Processes {
		after = append(after, p.PID)
		if p.Restarts != 0 {
			t.Errorf("%s.%d restarted %d times across the agent's restart", p.Process, p.Instance, p.Restarts)
		}
	}
	if fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("pids after agent restart %v, want the same %v", after, before)
	}

	// Logs of every instance, through the CLI.
	r = ferry(t, "", nil, "agent", "logs", "--root", root, "shell", "--process", "web")
	if r.code != 0 || !strings.Contains(r.stdout, "web.1 | ") || !strings.Contains(r.stdout, "web.2 of v1-") {
		t.Errorf("agent logs: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}

	// Scale through the document: only the change is applied.
	write(fmt.Sprintf("apps:\n  shell:\n    artifact: %s\n    sha256: %s\n    scale: {web: 1, worker: 0}\n", art, sum))
	waitStatus(t, root, "scaled down", allHealthy(sum, 1))
}

// killUnder SIGKILLs every process whose working directory is dir or below
// it: the apps, and the agent's proxy process, which works in the root.
func killUnder(dir string) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		if err == nil && (cwd == dir || strings.HasPrefix(cwd, dir+"/")) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}
