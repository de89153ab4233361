package supervise

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// RunDirEnv marks every process an Instance starts with its RunDir. An
// agent SIGKILLed between starting a process and recording its pid leaves
// a process no state names; the next agent finds it by this mark.
const RunDirEnv = "FERRY_RUN_DIR"

// Orphans lists the process group leaders whose RunDirEnv lies under
// prefix and whose pid is not in known (the pids a state records, which
// are adopted instead): processes an earlier agent started and never
// recorded.
func Orphans(prefix string, known map[int]bool) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || known[pid] || pid == os.Getpid() {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil {
			continue
		}
		for kv := range bytes.SplitSeq(env, []byte{0}) {
			v, ok := bytes.CutPrefix(kv, []byte(RunDirEnv+"="))
			if !ok || !strings.HasPrefix(string(v), prefix) {
				continue
			}
			if st, err := readStat(pid); err == nil && st.pgrp == pid && st.state != 'Z' {
				out = append(out, pid)
			}
			break
		}
	}
	return out
}

// StopGroups sends SIGTERM to each process group, and SIGKILL to those
// still there after grace.
func StopGroups(pgids []int, grace time.Duration) {
	for _, pg := range pgids {
		syscall.Kill(-pg, syscall.SIGTERM)
	}
	deadline := time.Now().Add(grace)
	for _, pg := range pgids {
		for syscall.Kill(-pg, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		syscall.Kill(-pg, syscall.SIGKILL)
	}
}
