package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ferrydeploy/ferry/bench/internal/host"
)

// Measurement is one run of a tool.
//
// MaxRSS comes from wait4(2): on Linux the rusage of a reaped child is
// RUSAGE_BOTH of that child, so ru_maxrss is the largest peak RSS of the
// process itself or of any descendant it waited for (stretcher's tar and
// rsync). It is a maximum over processes, not a sum. TreeRSS is the sum of
// VmRSS over the whole process tree, sampled, so it sees rsync's three
// processes running at once; PerProcess is each command's VmHWM as last
// sampled. Sampled values can miss a peak shorter than the interval.
type Measurement struct {
	Wall       time.Duration
	User, Sys  time.Duration // CPU of the process and its reaped descendants
	MaxRSS     int64         // KiB
	TreeRSS    int64         // KiB, sampled
	PerProcess map[string]int64
}

// Command is a tool run.
type Command struct {
	Args  []string
	Stdin string
	Env   []string
	Dir   string
	Log   string // stdout and stderr go here
}

// runnerArg makes this binary a runner: it starts the tool, waits for it
// and reports its rusage on fd 3.
//
// Why not measure the tool directly: exec(2) seeds the new program's
// ru_maxrss with the high-water RSS of the address space it replaces, and
// Go starts children with vfork, so that address space is the parent's. A
// tool started straight from the bench would never report less than the
// bench's own ~35 MiB (generating and packing the artifacts). The runner is
// a fresh small process, so the floor is its few MiB (Baseline measures it).
const runnerArg = "-run-and-measure"

// runChild is the runner: args is the tool's command line.
func runChild(args []string) int {
	res := os.NewFile(3, "result")
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	if cmd.ProcessState == nil {
		fmt.Fprintln(os.Stderr, "runner:", err)
		return 127
	}
	ru, _ := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if ru == nil {
		ru = &syscall.Rusage{}
	}
	fmt.Fprintf(res, "%d %d %d %d\n", wall.Nanoseconds(), ru.Maxrss, ru.Utime.Nano(), ru.Stime.Nano())
	res.Close()
	return cmd.ProcessState.ExitCode()
}

// Run runs c once, through the runner, and measures it; sample is the
// /proc sampling interval (0: none).
func (c Command) Run(ctx context.Context, sample time.Duration) (Measurement, error) {
	var m Measurement
	self, err := os.Executable()
	if err != nil {
		return m, err
	}
	logf, err := os.Create(c.Log)
	if err != nil {
		return m, err
	}
	defer logf.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		return m, err
	}
	defer pr.Close()
	cmd := exec.CommandContext(ctx, self, append([]string{runnerArg}, c.Args...)...)
	cmd.Stdin = strings.NewReader(c.Stdin)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env, cmd.Dir = c.Env, c.Dir
	cmd.ExtraFiles = []*os.File{pw}
	if err := cmd.Start(); err != nil {
		pw.Close()
		return m, err
	}
	pw.Close()
	var s *sampler
	if sample > 0 {
		s = startSampler(cmd.Process.Pid, sample)
	}
	result, _ := io.ReadAll(pr)
	err = cmd.Wait()
	if s != nil {
		m.TreeRSS, m.PerProcess = s.stop()
	}
	var wall, user, sys int64
	if _, serr := fmt.Sscan(string(result), &wall, &m.MaxRSS, &user, &sys); serr != nil && err == nil {
		err = fmt.Errorf("runner reported %q: %w", result, serr)
	}
	m.Wall, m.User, m.Sys = time.Duration(wall), time.Duration(user), time.Duration(sys)
	if err != nil {
		return m, fmt.Errorf("%s: %w; its log:\n%s", strings.Join(c.Args, " "), err, tail(c.Log, 2000))
	}
	return m, nil
}

// Baseline is the ru_maxrss the runner reports for /bin/true: the floor
// under every MaxRSS.
func Baseline(ctx context.Context, dir string) (int64, error) {
	m, err := Command{Args: []string{"true"}, Dir: dir, Log: os.DevNull}.Run(ctx, 0)
	return m.MaxRSS, err
}

func tail(p string, n int) string {
	b, _ := os.ReadFile(p)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// sampler polls /proc for the process tree below root (the runner). Without
// CONFIG_PROC_CHILDREN it finds children by scanning every /proc/*/stat.
type sampler struct {
	root     int
	done     chan struct{}
	finished chan struct{}
	treeRSS  int64
	hwm      map[string]int64
}

func startSampler(root int, every time.Duration) *sampler {
	s := &sampler{root: root, done: make(chan struct{}), finished: make(chan struct{}), hwm: map[string]int64{}}
	go func() {
		defer close(s.finished)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			s.sample()
			select {
			case <-s.done:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *sampler) stop() (int64, map[string]int64) {
	close(s.done)
	<-s.finished
	return s.treeRSS, s.hwm
}

func (s *sampler) sample() {
	children := map[int][]int{}
	for pid, ppid := range host.Parents() {
		children[ppid] = append(children[ppid], pid)
	}
	var sum int64
	for q := children[s.root]; len(q) > 0; q = q[1:] { // below the runner
		pid := q[0]
		q = append(q, children[pid]...)
		name, rss, hwm := procStatus(pid)
		if name == "" {
			continue
		}
		sum += rss
		s.hwm[name] = max(s.hwm[name], hwm)
	}
	s.treeRSS = max(s.treeRSS, sum)
}

// procStatus returns a process's command name, VmRSS and VmHWM in KiB;
// name is "" for a process gone or a zombie.
func procStatus(pid int) (name string, rss, hwm int64) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return "", 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "Name":
			name = v
		case "VmRSS":
			rss, _ = strconv.ParseInt(strings.TrimSuffix(v, " kB"), 10, 64)
		case "VmHWM":
			hwm, _ = strconv.ParseInt(strings.TrimSuffix(v, " kB"), 10, 64)
		}
	}
	if hwm == 0 { // a zombie has no memory left to report
		return "", 0, 0
	}
	return name, rss, hwm
}
