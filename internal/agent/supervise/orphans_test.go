package supervise

import (
	"os"
	"os/exec"
	"slices"
	"syscall"
	"testing"
	"time"
)

// TestOrphans: a process group leader carrying the RunDir mark under the
// prefix is found unless its pid is known; its child, another prefix and
// an unmarked process are not; StopGroups ends it.
func TestOrphans(t *testing.T) {
	root := t.TempDir()
	start := func(mark string, pgid bool) *exec.Cmd {
		cmd := exec.Command("sh", "-c", "sleep 60 & wait")
		if mark != "" {
			cmd.Env = append(os.Environ(), RunDirEnv+"="+mark)
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: pgid}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}
	orphan := start(root+"/apps/hello/run", true)
	known := start(root+"/apps/hello/run", true)
	other := start(t.TempDir()+"/apps/x/run", true)
	unmarked := start("", true)
	// sh has started its sleep child by the time it is seen in /proc with
	// the mark; give it a moment to fork, without a fixed sleep mattering.
	deadline := time.Now().Add(5 * time.Second)
	var got []int
	for time.Now().Before(deadline) {
		got = Orphans(root+"/apps/", map[int]bool{known.Process.Pid: true})
		if slices.Contains(got, orphan.Process.Pid) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !slices.Equal(got, []int{orphan.Process.Pid}) {
		t.Fatalf("Orphans = %v, want only %d (known %d, other %d, unmarked %d)", got, orphan.Process.Pid, known.Process.Pid, other.Process.Pid, unmarked.Process.Pid)
	}
	StopGroups(got, 2*time.Second)
	if err := orphan.Wait(); err == nil {
		t.Fatal("the orphan exited cleanly; want it stopped by a signal")
	}
	if got := Orphans(root+"/apps/", map[int]bool{known.Process.Pid: true}); len(got) != 0 {
		t.Fatalf("after StopGroups: %v", got)
	}
}
