package health

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestHTTP(t *testing.T) {
	mux := http.NewServeMux()
	for _, code := range []int{200, 204, 404, 500} {
		mux.HandleFunc("/"+strconv.Itoa(code), func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(code) })
	}
	mux.HandleFunc("/down", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "db down\nretry later", http.StatusServiceUnavailable)
	})
	mux.HandleFunc("/long", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		w.Write([]byte(strings.Repeat("x", 1000)))
	})
	// Following this redirect would make the check fail.
	mux.HandleFunc("/moved", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/500", http.StatusFound) })
	mux.HandleFunc("/endless", func(w http.ResponseWriter, r *http.Request) {
		chunk := []byte(strings.Repeat("y", 4096))
		for r.Context().Err() == nil {
			if _, err := w.Write(chunk); err != nil {
				return
			}
			w.(http.Flusher).Flush()
		}
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	tests := []struct {
		path    string
		status  int
		wantErr string // "" for success
	}{
		{"/200", 0, ""},
		{"/204", 0, ""},
		{"/moved", 0, ""},
		{"/404", 404, ""},
		{"/endless", 0, ""},
		{"/404", 0, "status 404, want 2xx or 3xx"},
		{"/200", 201, "status 200, want 201"},
		{"/moved", 200, "status 302, want 200"},
		{"/down", 0, `status 503, want 2xx or 3xx; body: "db down\nretry later"`},
		{"/long", 0, `; body: "` + strings.Repeat("x", maxOutput) + `"…`},
	}
	for _, tt := range tests {
		t.Run(tt.path+"/"+strconv.Itoa(tt.status), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := HTTP(srv.URL+tt.path, tt.status).Probe(ctx)
			checkErr(t, err, tt.wantErr)
			if err != nil && !strings.HasPrefix(err.Error(), "GET "+srv.URL+tt.path+": ") {
				t.Errorf("error %q does not start with the request", err)
			}
		})
	}
}

func TestHTTPRefused(t *testing.T) {
	addr := closedAddr(t)
	err := HTTP("http://"+addr+"/healthz", 0).Probe(context.Background())
	checkErr(t, err, "connection refused")
	if want := "GET http://" + addr + "/healthz: dial tcp " + addr; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %q does not start with %q", err, want)
	}
}

func TestTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := TCP(ln.Addr().String()).Probe(context.Background()); err != nil {
		t.Errorf("open port: %v", err)
	}
	addr := closedAddr(t)
	err = TCP(addr).Probe(context.Background())
	checkErr(t, err, "dial tcp "+addr+": connect: connection refused")
}

func TestExec(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, command string
		env           []string
		wantErr       string
	}{
		{"true", "true", nil, ""},
		{"false", "false", nil, `exec "false": exit status 1`},
		{"output", "echo starting; echo boom >&2; exit 3", nil, `exec "echo starting; echo boom >&2; exit 3": exit status 3; output: "starting\nboom"`},
		{"output tail", "head -c 5000 /dev/zero | tr '\\0' x; echo; echo END; exit 1", nil, `: exit status 1; output: …"` + strings.Repeat("x", maxOutput-len("\nEND\n")) + `\nEND"`},
		{"not found", "no-such-command-here", nil, "exit status 127; output: "},
		{"dir", `test "$(pwd)" = "` + dir + `"`, nil, ""},
		{"env", `test "$FOO" = bar`, []string{"FOO=bar", "PATH=" + os.Getenv("PATH")}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := Exec(tt.command, dir, tt.env).Probe(ctx)
			checkErr(t, err, tt.wantErr)
			if err != nil && len(err.Error()) > len(tt.command)+maxOutput+60 {
				t.Errorf("error of %d bytes, want the output cut to its tail: %q", len(err.Error()), err)
			}
		})
	}
}

// TestExecKillsGroup checks that an exec check leaves nothing running,
// whether it times out or exits leaving a background process behind.
func TestExecKillsGroup(t *testing.T) {
	tests := []struct {
		name, script string
		timeout      time.Duration
		wantErr      string
	}{
		{"timeout", "sleep 100 & sleep 10", 100 * time.Millisecond, "context deadline exceeded"},
		{"exited", "sleep 100 & exit 0", 10 * time.Second, ""},
		{"exited holding output", "sleep 100 & exit 1", 10 * time.Second, "exit status 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pidFile := filepath.Join(t.TempDir(), "pid")
			ctx, cancel := context.WithTimeout(context.Background(), tt.timeout)
			defer cancel()
			start := time.Now()
			err := Exec("echo $$ >>"+pidFile+"; "+tt.script, "", nil).Probe(ctx)
			if took := time.Since(start); took > 3*time.Second {
				t.Errorf("probe took %v", took)
			}
			checkErr(t, err, tt.wantErr)
			if tt.timeout < time.Second && !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("error %v is not context.DeadlineExceeded", err)
			}
			waitGroupsGone(t, readPids(t, pidFile))
		})
	}
}

// checkErr fails t unless err is nil when want is "" and otherwise
// contains want.
func checkErr(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Errorf("error %q, want none", err)
	case want != "" && err == nil:
		t.Errorf("no error, want one containing %q", want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Errorf("error %q, want one containing %q", err, want)
	}
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// readPids returns the pids that commands appended to path, one a line.
func readPids(t *testing.T, path string) []int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	if len(pids) == 0 {
		t.Fatalf("no pid in %s", path)
	}
	return pids
}

// waitGroupsGone waits until no live process is in any of the process
// groups pgids. Zombies count as gone: whoever is pid 1 here may never reap
// them.
func waitGroupsGone(t *testing.T, pgids []int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for _, pgid := range pgids {
		for {
			left := groupMembers(t, pgid)
			if len(left) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("process group %d still has processes %v", pgid, left)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func groupMembers(t *testing.T, pgid int) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // exited meanwhile
		}
		// After the command name, which may hold anything: state ppid pgrp …
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 3 || f[0] == "Z" {
			continue
		}
		if g, _ := strconv.Atoi(f[2]); g == pgid {
			pids = append(pids, pid)
		}
	}
	return pids
}
