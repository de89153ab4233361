// Package host describes the machine a benchmark runs on, so every bench
// program reports it the same way.
package host

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Facts are what a result needs to be compared with another machine's.
type Facts struct {
	NProc  int    `json:"nproc"`
	Model  string `json:"model"`
	Memory string `json:"memory"`
	Kernel string `json:"kernel"`
	Go     string `json:"go"`
}

// Read gathers the facts of this machine; what it cannot read stays empty.
func Read() Facts {
	f := Facts{NProc: runtime.NumCPU(), Model: GrepFile("/proc/cpuinfo", "model name"), Go: runtime.Version()}
	if v := GrepFile("/proc/meminfo", "MemTotal"); v != "" {
		var kb int64
		fmt.Sscanf(v, "%d", &kb)
		f.Memory = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		f.Kernel = unix.ByteSliceToString(u.Sysname[:]) + " " + unix.ByteSliceToString(u.Release[:])
	}
	return f
}

// Parts are the facts as report phrases, empty ones left out.
func (f Facts) Parts() []string {
	parts := []string{fmt.Sprintf("nproc %d", f.NProc)}
	for _, s := range []string{f.Model, f.Memory, f.Kernel, f.Go} {
		if s != "" {
			parts = append(parts, s)
		}
	}
	return parts
}

// GrepFile returns the value of the first "key: value" line of p, as in
// /proc/cpuinfo and /proc/meminfo, or "".
func GrepFile(p, key string) string {
	f, err := os.Open(p)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// Mount returns the filesystem type and device of the mount holding p,
// or "" for both.
func Mount(p string) (fstype, dev string) {
	p, _ = filepath.Abs(p)
	f, err := os.Open("/proc/mounts")
	if err != nil {
		return "", ""
	}
	defer f.Close()
	best := -1
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) < 3 {
			continue
		}
		mp := fl[1]
		if (p == mp || strings.HasPrefix(p, strings.TrimSuffix(mp, "/")+"/")) && len(mp) > best {
			best, fstype, dev = len(mp), fl[2], fl[0]
		}
	}
	return fstype, dev
}

// Parents maps every process's pid to its parent's, read from /proc (empty
// where there is none).
func Parents() map[int]int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	parent := map[int]int{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid …; comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		if f := strings.Fields(string(b[i+1:])); len(f) > 1 {
			parent[pid], _ = strconv.Atoi(f[1])
		}
	}
	return parent
}
