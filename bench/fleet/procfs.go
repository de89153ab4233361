package main

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ferrydeploy/ferry/bench/internal/host"
)

// Snapshot is this process (server and agents) and the app processes
// under it at one moment. Sizes in KiB.
type Snapshot struct {
	RSSKiB      int64  `json:"rss_kib"`
	HWMKiB      int64  `json:"hwm_kib"` // the process's peak RSS so far
	Threads     int    `json:"threads"`
	Goroutines  int    `json:"goroutines"`
	FDs         int    `json:"fds"`
	Children    int    `json:"children"`      // descendant processes: the apps' instances
	ChildRSSKiB int64  `json:"child_rss_kib"` // their VmRSS summed
	Load        string `json:"load"`
}

func snapshot() Snapshot {
	s := Snapshot{Goroutines: runtime.NumGoroutine(), Load: loadavg()}
	st := readStatus(os.Getpid())
	s.RSSKiB, s.HWMKiB, s.Threads = st["VmRSS"], st["VmHWM"], int(st["Threads"])
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		s.FDs = len(ents)
	}
	for _, pid := range descendants() {
		s.Children++
		s.ChildRSSKiB += readStatus(pid)["VmRSS"]
	}
	return s
}

// readStatus reads the numeric fields of /proc/PID/status (kB dropped).
func readStatus(pid int) map[string]int64 {
	out := map[string]int64{}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		if n, err := strconv.ParseInt(f[0], 10, 64); err == nil {
			out[k] = n
		}
	}
	return out
}

// descendants lists every process whose parent chain leads to this one.
func descendants() []int {
	parent := host.Parents()
	self := os.Getpid()
	var out []int
	for pid := range parent {
		if _, ok := infra.Load(pid); ok {
			continue
		}
		for p, n := parent[pid], 0; p > 1 && n < 64; p, n = parent[p], n+1 {
			if p == self {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

// killDescendants SIGKILLs what the agents left running and says how many
// there were (zombies the runtime has not reaped yet included).
func killDescendants() int {
	left := descendants()
	for _, pid := range left {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	return len(left)
}

// selfCPU is this process's user+system time so far.
func selfCPU() time.Duration {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// Limits are the resource limits the run had. Go raises the soft limit
// on open files to the hard one at start (and restores it for children).
type Limits struct {
	NoFile     uint64 `json:"nofile"`
	NoFileHard uint64 `json:"nofile_hard"`
	NProc      uint64 `json:"nproc"`
	PIDMax     string `json:"pid_max"`
}

func raiseNoFile() Limits {
	var l Limits
	var r unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &r) == nil {
		if r.Cur < r.Max {
			r.Cur = r.Max
			unix.Setrlimit(unix.RLIMIT_NOFILE, &r)
			unix.Getrlimit(unix.RLIMIT_NOFILE, &r)
		}
		l.NoFile, l.NoFileHard = r.Cur, r.Max
	}
	if unix.Getrlimit(unix.RLIMIT_NPROC, &r) == nil {
		l.NProc = r.Cur
	}
	if b, err := os.ReadFile("/proc/sys/kernel/pid_max"); err == nil {
		l.PIDMax = strings.TrimSpace(string(b))
	}
	return l
}
