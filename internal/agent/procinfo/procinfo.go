// Package procinfo asks the kernel, through /proc, what processes hold:
// which listening TCP sockets (so that a port the agent cannot bind names
// the process that has it), and which file locks (so that a new instance
// that cannot start beside the old one says why). Linux only, like the
// agent.
package procinfo

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Proc is one process, as a person would recognise it.
type Proc struct {
	PID     int    `json:"pid"`
	Command string `json:"command"` // its command line, or its name when that is unreadable
}

func (p Proc) String() string {
	if p.Command == "" {
		return fmt.Sprintf("pid %d", p.PID)
	}
	return fmt.Sprintf("pid %d (%s)", p.PID, p.Command)
}

// Describe is pid with its command line.
func Describe(pid int) Proc {
	p := Proc{PID: pid}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && len(b) > 0 {
		p.Command = strings.TrimSpace(strings.ReplaceAll(strings.TrimRight(string(b), "\x00"), "\x00", " "))
	}
	if p.Command == "" {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil {
			p.Command = strings.TrimSpace(string(b))
		}
	}
	const most = 120
	if len(p.Command) > most {
		p.Command = p.Command[:most] + "…"
	}
	return p
}

// tcpListen is the state of a listening socket in /proc/net/tcp (TCP_LISTEN).
const tcpListen = "0A"

// listeningInodes maps the inode of every listening TCP socket (IPv4 and
// IPv6) in this network namespace to its local port.
func listeningInodes() map[uint64]int {
	out := map[uint64]int{}
	for _, name := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(name)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // the header
		for sc.Scan() {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode …
			fs := strings.Fields(sc.Text())
			if len(fs) < 10 || fs[3] != tcpListen {
				continue
			}
			_, hexPort, ok := strings.Cut(fs[1], ":")
			port, err := strconv.ParseUint(hexPort, 16, 16)
			inode, ierr := strconv.ParseUint(fs[9], 10, 64)
			if !ok || err != nil || ierr != nil || inode == 0 {
				continue
			}
			out[inode] = int(port)
		}
		f.Close()
	}
	return out
}

// socketInodes lists the socket inodes among pid's open files.
func socketInodes(pid int) []uint64 {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []uint64
	for _, e := range ents {
		link, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		if s, ok := strings.CutPrefix(link, "socket:["); ok {
			if n, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// pids lists every process this one can see.
func pids() []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

// PortHolders lists the processes with a listening TCP socket on port, on
// any address. It finds only what this process may look into: a process of
// another user is invisible to an agent that is not root.
func PortHolders(port int) []Proc {
	want := map[uint64]bool{}
	for inode, p := range listeningInodes() {
		if p == port {
			want[inode] = true
		}
	}
	if len(want) == 0 {
		return nil
	}
	var out []Proc
	for _, pid := range pids() {
		if slices.ContainsFunc(socketInodes(pid), func(n uint64) bool { return want[n] }) {
			out = append(out, Describe(pid))
		}
	}
	return out
}

// ListeningPorts lists, sorted, the TCP ports the processes pids listen on.
func ListeningPorts(pids []int) []int {
	inodes := listeningInodes()
	var out []int
	for _, pid := range pids {
		for _, n := range socketInodes(pid) {
			if p, ok := inodes[n]; ok && !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	slices.Sort(out)
	return out
}

// Lock is an exclusive file lock a process holds.
type Lock struct {
	Path string `json:"path"`
	PID  int    `json:"pid"`
	Kind string `json:"kind"` // FLOCK (flock(2)), POSIX (fcntl), OFDLCK (open file description)
}

// openFiles maps the inode of each regular file pid has open to its path.
func openFiles(pid int) map[uint64]string {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	out := map[uint64]string{}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		var st syscall.Stat_t
		if syscall.Stat(p, &st) != nil || st.Mode&syscall.S_IFMT != syscall.S_IFREG {
			continue
		}
		if target, err := os.Readlink(p); err == nil {
			out[st.Ino] = target
		}
	}
	return out
}

// ExclusiveLocks lists the write locks (flock LOCK_EX, fcntl F_WRLCK) that
// the processes pids hold on files they have open, from /proc/locks. A
// lock is matched by its holder's pid and the file's inode; an open file
// description lock records no pid, so the file being open is enough.
func ExclusiveLocks(pids []int) []Lock {
	b, err := os.ReadFile("/proc/locks")
	if err != nil {
		return nil
	}
	files := map[int]map[uint64]string{}
	for _, pid := range pids {
		files[pid] = openFiles(pid)
	}
	var out []Lock
	for line := range bytes.Lines(b) {
		// "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"; a blocked
		// waiter's line has "->" after the number.
		fs := strings.Fields(string(line))
		if len(fs) >= 2 && fs[1] == "->" {
			continue
		}
		if len(fs) < 6 || fs[3] != "WRITE" {
			continue
		}
		kind := fs[1]
		holder, _ := strconv.Atoi(fs[4])
		id := strings.Split(fs[5], ":")
		if len(id) != 3 {
			continue
		}
		inode, err := strconv.ParseUint(id[2], 10, 64)
		if err != nil {
			continue
		}
		for _, pid := range pids {
			if holder != pid && holder != -1 {
				continue
			}
			if path, ok := files[pid][inode]; ok {
				if !slices.ContainsFunc(out, func(l Lock) bool { return l.Path == path }) {
					out = append(out, Lock{Path: path, PID: pid, Kind: kind})
				}
				break
			}
		}
	}
	return out
}

// HasOpen reports whether one of pids has the file at path open.
func HasOpen(pids []int, path string) bool {
	for _, pid := range pids {
		for _, p := range openFiles(pid) {
			if p == path {
				return true
			}
		}
	}
	return false
}

// Stat is what /proc/PID/stat says of a process that identifies it.
type Stat struct {
	State      byte   // R, S, D, Z, …
	PGRP       int    // its process group
	StartTicks uint64 // its start time, in clock ticks since boot: with the pid, it names one process across pid reuse
}

// ReadStat reads pid's Stat.
func ReadStat(pid int) (Stat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Stat{}, err
	}
	// The command name may hold spaces and parentheses: split after the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return Stat{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return Stat{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	pgrp, _ := strconv.Atoi(f[2])
	ticks, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return Stat{}, fmt.Errorf("/proc/%d/stat: start time: %w", pid, err)
	}
	return Stat{State: f[0][0], PGRP: pgrp, StartTicks: ticks}, nil
}

// Environ is pid's environment (as it was when the process started).
func Environ(pid int) map[string]string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		return nil
	}
	out := map[string]string{}
	for kv := range bytes.SplitSeq(b, []byte{0}) {
		if k, v, ok := strings.Cut(string(kv), "="); ok {
			out[k] = v
		}
	}
	return out
}

// TakeListener duplicates into this process the listening TCP socket on
// port that pid holds, with pidfd_getfd(2): the same socket, with its
// accept queue, not a new one. It needs the right to ptrace pid (root, or
// pid's own user where ptrace is not restricted to descendants).
func TakeListener(pid, port int) (*os.File, error) {
	want := map[uint64]bool{}
	for inode, p := range listeningInodes() {
		if p == port {
			want[inode] = true
		}
	}
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		link, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		s, ok := strings.CutPrefix(link, "socket:[")
		n, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64)
		if !ok || err != nil || !want[n] {
			continue
		}
		target, _ := strconv.Atoi(e.Name())
		pfd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			return nil, fmt.Errorf("pidfd_open %d: %w", pid, err)
		}
		defer unix.Close(pfd)
		fd, err := unix.PidfdGetfd(pfd, target, 0)
		if err != nil {
			return nil, fmt.Errorf("pidfd_getfd %d fd %d: %w", pid, target, err)
		}
		return os.NewFile(uintptr(fd), fmt.Sprintf("port %d of pid %d", port, pid)), nil
	}
	return nil, fmt.Errorf("pid %d holds no listening socket on port %d", pid, port)
}
