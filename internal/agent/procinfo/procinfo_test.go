package procinfo

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestPortHoldersAndListeningPorts(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	hs := PortHolders(port)
	if len(hs) != 1 || hs[0].PID != os.Getpid() || !strings.Contains(hs[0].Command, filepath.Base(os.Args[0])) {
		t.Errorf("holders of port %d: %+v, want this process (pid %d)", port, hs, os.Getpid())
	}
	if got := ListeningPorts([]int{os.Getpid()}); !slices.Contains(got, port) {
		t.Errorf("this process listens on %v, want %d among them", got, port)
	}
	l.Close()
	if hs := PortHolders(port); len(hs) != 0 {
		t.Errorf("holders of closed port %d: %+v", port, hs)
	}
}

// TestExclusiveLocks: a child holds flock(LOCK_EX) on a file; the lock is
// found for it, and a shared lock or a file it does not lock is not.
func TestExclusiveLocks(t *testing.T) {
	need := func(p string) {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("%s is not installed", p)
		}
	}
	need("flock")
	dir := t.TempDir()
	locked, shared := filepath.Join(dir, "app.db"), filepath.Join(dir, "shared.db")
	os.WriteFile(locked, nil, 0o600)
	os.WriteFile(shared, nil, 0o600)
	hold := func(args ...string) *exec.Cmd {
		cmd := exec.Command("flock", append(args, "sleep", "100")...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}
	ex := hold("-x", locked)
	sh := hold("-s", shared)
	// flock(1) takes the lock, then forks the command, which inherits
	// the open file: both have the file open, the lock records flock.
	pids := []int{ex.Process.Pid, sh.Process.Pid}
	deadline := time.Now().Add(5 * time.Second)
	var got []Lock
	for {
		got = ExclusiveLocks(pids)
		if len(got) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(got) != 1 || got[0].Path != locked || got[0].PID != ex.Process.Pid || got[0].Kind != "FLOCK" {
		t.Errorf("exclusive locks of %v: %+v, want one FLOCK on %s by %d", pids, got, locked, ex.Process.Pid)
	}
	if !HasOpen(pids, locked) || HasOpen(pids, filepath.Join(dir, "other")) {
		t.Errorf("HasOpen: wrong")
	}
}

func TestReadStat(t *testing.T) {
	cmd := exec.Command("sleep", "100")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	st, err := ReadStat(cmd.Process.Pid)
	if err != nil || st.PGRP != cmd.Process.Pid || st.StartTicks == 0 {
		t.Errorf("ReadStat: %+v, %v", st, err)
	}
	self, _ := ReadStat(os.Getpid())
	if self.StartTicks > st.StartTicks {
		t.Errorf("this process started after its child: %d > %d", self.StartTicks, st.StartTicks)
	}
}
