package supervise

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// proc is one run of an instance's command: a child this agent started, or
// a process an earlier agent started and this one adopted.
type proc struct {
	pid   int
	ticks uint64        // start time in clock ticks since boot, from /proc
	done  chan struct{} // closed when the process has exited
	err   error         // why it exited; set before done is closed
}

// shellCommand runs command with sh -c, exec'ing it when it is one simple
// command so the instance's pid is the app's own (signals, readiness
// notifications and adoption all go by pid).
func shellCommand(command string) []string {
	f := strings.Fields(command)
	if len(f) == 0 || strings.ContainsAny(command, ";&|\n()`<>{}!") || strings.Contains(f[0], "=") || shellWords[f[0]] {
		return []string{"/bin/sh", "-c", command}
	}
	return []string{"/bin/sh", "-c", "exec " + command}
}

// shellWords are builtins and keywords that exec cannot run.
var shellWords = map[string]bool{
	"exit": true, "export": true, "set": true, "unset": true, "cd": true, "trap": true, "if": true,
	"while": true, "until": true, "for": true, "case": true, ":": true, ".": true, "eval": true,
	"readonly": true, "shift": true, "return": true, "break": true, "continue": true, "exec": true,
	"ulimit": true, "umask": true, "wait": true, "read": true, "local": true, "alias": true, "command": true,
}

// fifos returns the paths of the named pipes an instance writes its stdout
// and stderr to. A named pipe, unlike an anonymous one, can be reopened by
// a restarted agent, and because the app holds it open read-write it never
// gets SIGPIPE while no agent reads: it only blocks once the pipe's buffer
// is full.
func fifos(runDir, name string) (out, errPath string) {
	return filepath.Join(runDir, name+".stdout"), filepath.Join(runDir, name+".stderr")
}

// pipeSize is the buffer asked for each output FIFO: 1 MiB, the default
// limit of /proc/sys/fs/pipe-max-size for unprivileged processes.
const pipeSize = 1 << 20

func makeFIFO(path string) error {
	fi, err := os.Lstat(path)
	if err == nil && fi.Mode()&os.ModeNamedPipe != 0 {
		return nil
	}
	if err == nil {
		if err := os.Remove(path); err != nil {
			return err
		}
	}
	if err := unix.Mkfifo(path, 0o600); err != nil {
		return fmt.Errorf("mkfifo %s: %w", path, err)
	}
	return nil
}

// openReader opens the agent's reading end of a FIFO without waiting for a
// writer; reads see EOF once every writer has closed it.
func openReader(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
}

// startProc starts argv in its own process group with stdout and stderr on
// the FIFOs at outPath and errPath and files as fds 3, 4, …, and returns it
// with readers of both FIFOs.
func startProc(argv []string, dir string, env []string, files []*os.File, outPath, errPath string) (*proc, [2]*os.File, error) {
	var readers [2]*os.File
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return nil, readers, fmt.Errorf("working directory %s: %w", dir, cmpErr(err, "not a directory"))
	}
	var writers []*os.File
	closeAll := func() {
		for _, f := range writers {
			f.Close()
		}
	}
	for i, path := range []string{outPath, errPath} {
		if err := makeFIFO(path); err != nil {
			closeAll()
			closeReaders(readers)
			return nil, readers, err
		}
		// The writer first, so the reader never sees a pipe without one.
		w, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			closeAll()
			closeReaders(readers)
			return nil, readers, err
		}
		writers = append(writers, w)
		// While no agent reads (it is restarting), the app may write this
		// much before it blocks; the kernel's default is 64 KiB. Best
		// effort: an unprivileged agent may be capped lower.
		unix.FcntlInt(w.Fd(), unix.F_SETPIPE_SZ, pipeSize)
		r, err := openReader(path)
		if err != nil {
			closeAll()
			closeReaders(readers)
			return nil, readers, err
		}
		readers[i] = r
	}
	defer closeAll()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir, cmd.Env = dir, env
	cmd.Stdout, cmd.Stderr = writers[0], writers[1]
	cmd.ExtraFiles = files
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		closeReaders(readers)
		return nil, [2]*os.File{}, err
	}
	p := &proc{pid: cmd.Process.Pid, done: make(chan struct{})}
	p.ticks, _ = startTicks(p.pid)
	go func() {
		err := cmd.Wait()
		p.err = exitError(err)
		close(p.done)
	}()
	return p, readers, nil
}

func closeReaders(rs [2]*os.File) {
	for _, r := range rs {
		if r != nil {
			r.Close()
		}
	}
}

// exitError describes how a child ended, in the words of a status line.
func exitError(err error) error {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return err
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return fmt.Errorf("killed by signal %s", unix.SignalName(ws.Signal()))
	}
	return fmt.Errorf("exited with code %d", ee.ExitCode())
}

// adopt attaches to a process an earlier agent started, if pid still names
// that process: same start time, alive, leading its own process group. A
// pid the kernel has reused for something else is never adopted.
func adopt(pid int, ticks uint64) (*proc, error) {
	st, err := readStat(pid)
	if err != nil {
		return nil, fmt.Errorf("pid %d is gone", pid)
	}
	if st.ticks != ticks {
		return nil, fmt.Errorf("pid %d now names another process (start time %d, recorded %d)", pid, st.ticks, ticks)
	}
	if st.state == 'Z' || st.state == 'X' {
		return nil, fmt.Errorf("pid %d has exited", pid)
	}
	if st.pgrp != pid {
		return nil, fmt.Errorf("pid %d is not a process group leader", pid)
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	p := &proc{pid: pid, ticks: ticks, done: make(chan struct{})}
	go func() {
		defer unix.Close(fd)
		// A pidfd turns readable when the process exits; it is not our
		// child, so there is no exit status to collect.
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			_, err := unix.Poll(fds, -1)
			if err == unix.EINTR {
				continue
			}
			break
		}
		p.err = errors.New("exited (adopted process; exit status unknown)")
		close(p.done)
	}()
	return p, nil
}

type procStat struct {
	state byte
	pgrp  int
	ticks uint64
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	// The command name may contain spaces and parentheses: split after the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	pgrp, _ := strconv.Atoi(f[2])
	ticks, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("/proc/%d/stat: start time: %w", pid, err)
	}
	return procStat{state: f[0][0], pgrp: pgrp, ticks: ticks}, nil
}

// startTicks is pid's start time, which with the pid identifies a process
// across pid reuse.
func startTicks(pid int) (uint64, error) {
	st, err := readStat(pid)
	return st.ticks, err
}

// signalGroup signals every process in the group pgid leads. ESRCH (no
// such group any more) is not an error.
func signalGroup(pgid int, sig syscall.Signal) error {
	if pgid <= 1 {
		return fmt.Errorf("refusing to signal process group %d", pgid)
	}
	if err := syscall.Kill(-pgid, sig); err != nil && err != syscall.ESRCH {
		return err
	}
	return nil
}

// GroupMembers lists the live (not zombie) processes in group pgid, by
// scanning /proc: kill(-pgid, 0) also counts zombies nobody has reaped yet.
func GroupMembers(pgid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readStat(pid)
		if err != nil || st.pgrp != pgid || st.state == 'Z' || st.state == 'X' {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

func cmpErr(err error, otherwise string) error {
	if err != nil {
		return err
	}
	return errors.New(otherwise)
}
