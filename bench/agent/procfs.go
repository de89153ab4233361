package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat.
var clockTicks = func() int64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if n, perr := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64); err == nil && perr == nil && n > 0 {
		return n
	}
	return 100
}()

// procStat is what the bench reads from /proc/PID/stat.
type procStat struct {
	ppid, pgrp   int
	utime, stime int64 // clock ticks
}

func readStat(pid int) (procStat, error) {
	var s procStat
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return s, err
	}
	// pid (comm) state ppid pgrp …; comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return s, fmt.Errorf("/proc/%d/stat: no comm", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return s, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	s.ppid, _ = strconv.Atoi(f[1])
	s.pgrp, _ = strconv.Atoi(f[2])
	s.utime, _ = strconv.ParseInt(f[11], 10, 64)
	s.stime, _ = strconv.ParseInt(f[12], 10, 64)
	return s, nil
}

// cpu is utime+stime of a stat, as a duration.
func (s procStat) cpu() time.Duration {
	return time.Duration((s.utime + s.stime) * int64(time.Second) / clockTicks)
}

// memStatus is what the bench reads from /proc/PID/status, in KiB.
type memStatus struct {
	VmRSS, VmHWM, RssAnon, RssFile int64
	Threads                        int
}

func readStatus(pid int) (memStatus, error) {
	var m memStatus
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return m, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			m.VmRSS = n
		case "VmHWM":
			m.VmHWM = n
		case "RssAnon":
			m.RssAnon = n
		case "RssFile":
			m.RssFile = n
		case "Threads":
			m.Threads = int(n)
		}
	}
	return m, nil
}

// threadTotals adds up over pid's threads the context switches (each
// voluntary one is the thread going to sleep, so after it a wakeup) and the
// time on CPU from schedstat, in ns. Threads that exited are not counted;
// Go rarely ends an OS thread.
type threadTotals struct {
	Voluntary, Involuntary int64
	OnCPU                  time.Duration
}

func readThreads(pid int) threadTotals {
	var t threadTotals
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "status"))
		if err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				k, v, _ := strings.Cut(line, ":")
				n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				switch k {
				case "voluntary_ctxt_switches":
					t.Voluntary += n
				case "nonvoluntary_ctxt_switches":
					t.Involuntary += n
				}
			}
		}
		if b, err := os.ReadFile(filepath.Join(dir, e.Name(), "schedstat")); err == nil {
			if f := strings.Fields(string(b)); len(f) > 0 {
				ns, _ := strconv.ParseInt(f[0], 10, 64)
				t.OnCPU += time.Duration(ns)
			}
		}
	}
	return t
}

func openFDs(pid int) int {
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

// instanceScanner finds the agent's app instances in /proc: children of
// the agent, in their own process group, running the app's command (not a
// health probe, not a child between fork and exec). Pids it has decided
// about are not read again, so a scan costs one readdir of /proc and a few
// reads for new pids.
type instanceScanner struct {
	agent      int
	agentCmd   []byte
	isInstance func(cmdline []byte) bool
	known      map[int]*instance // nil value: not an instance
}

type instance struct {
	pid  int
	cwd  string // the release directory
	seen time.Time
}

func newScanner(agent int, isInstance func([]byte) bool) *instanceScanner {
	cmd, _ := os.ReadFile("/proc/" + strconv.Itoa(agent) + "/cmdline")
	return &instanceScanner{agent: agent, agentCmd: cmd, isInstance: isInstance, known: map[int]*instance{}}
}

// scan returns the live instances whose working directory is under
// releaseDir-prefix match (e.g. ".../apps/app1/releases/v2-1a2b3c4d"): a
// suffix of the release id names the artifact, so the caller passes
// ".../releases/" and "-" + sha[:8].
func (s *instanceScanner) scan(dirPrefix, idSuffix string) []*instance {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []*instance
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		in, ok := s.known[pid]
		if !ok {
			in, ok = s.decide(pid)
			if !ok {
				continue // undecided: look again next scan
			}
			s.known[pid] = in
		}
		if in != nil && strings.HasPrefix(in.cwd, dirPrefix) && strings.HasSuffix(in.cwd, idSuffix) && !zombie(pid) {
			out = append(out, in)
		}
	}
	return out
}

// decide says whether pid is an app instance; ok is false while it cannot
// tell yet (the child has not exec'd, so its cmdline is still the agent's).
func (s *instanceScanner) decide(pid int) (in *instance, ok bool) {
	st, err := readStat(pid)
	if err != nil {
		return nil, true // gone
	}
	if st.ppid != s.agent {
		return nil, true
	}
	cmd, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return nil, !alive(pid)
	}
	if len(cmd) == 0 || bytes.Equal(cmd, s.agentCmd) {
		// Between fork and exec (the child may not have called setpgid or
		// chdir yet either), or in the middle of an exec, when cmdline
		// reads empty.
		return nil, false
	}
	if st, err = readStat(pid); err != nil || st.pgrp != pid || !s.isInstance(cmd) {
		return nil, true
	}
	cwd, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/cwd")
	if err != nil {
		return nil, true
	}
	return &instance{pid: pid, cwd: cwd, seen: time.Now()}, true
}

func alive(pid int) bool {
	_, err := os.Stat("/proc/" + strconv.Itoa(pid))
	return err == nil
}

// loadavg is the 1, 5 and 15 minute load averages and runnable/total
// tasks from /proc/loadavg: other work on the machine shows in latencies.
func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 4 {
		return "?"
	}
	return strings.Join(f[:4], " ")
}

// zombie reports whether pid has exited (and is not reaped yet) or is gone.
func zombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] == 'Z' || b[i+2] == 'X'
}

// under lists the processes whose working directory is inside dir.
func under(dir string) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cwd, err := os.Readlink("/proc/" + e.Name() + "/cwd")
		if err == nil && strings.HasPrefix(strings.TrimSuffix(cwd, " (deleted)"), dir+"/") {
			out = append(out, pid)
		}
	}
	return out
}
