//go:build unix

package graceful

import (
	"fmt"
	"net"
	"os"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry/internal/testenv"
)

func TestParseActivation(t *testing.T) {
	const pid = 4242
	tests := []struct {
		name    string
		env     map[string]string
		want    []activation
		wantErr bool
	}{
		{name: "unset"},
		{name: "other process", env: map[string]string{"LISTEN_PID": "17", "LISTEN_FDS": "1"}},
		{name: "no fds", env: map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "0"}},
		{name: "pid without fds", env: map[string]string{"LISTEN_PID": "4242"}},
		{name: "one", env: map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "1"},
			want: []activation{{fd: 3}}},
		{name: "named", env: map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "web:admin"},
			want: []activation{{fd: 3, name: "web"}, {fd: 4, name: "admin"}}},
		{name: "names miscounted", env: map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "web"}, wantErr: true},
		{name: "bad pid", env: map[string]string{"LISTEN_PID": "x", "LISTEN_FDS": "1"}, wantErr: true},
		{name: "bad count", env: map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "-1"}, wantErr: true},
		{name: "absurd count", env: map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "99999999"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseActivation(func(k string) string { return tt.env[k] }, pid)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error: %v", err, tt.wantErr)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestPickPassed(t *testing.T) {
	var socks []inherited
	for _, name := range []string{"", "admin", ""} {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		socks = append(socks, inherited{name: name, l: l})
	}
	port2 := portOf(socks[2].l.Addr())
	tests := []struct {
		addr  string
		taken []int
		want  int
	}{
		{addr: ":8080", want: 0},              // no match: the first
		{addr: "admin", want: 1},              // by name
		{addr: "127.0.0.1:" + port2, want: 2}, // by port
		{addr: ":" + port2, want: 2},
		{addr: ":8080", taken: []int{0}, want: 1},
		{addr: "admin", taken: []int{1}, want: 0},
		{addr: ":8080", taken: []int{0, 1, 2}, want: -1},
	}
	for _, tt := range tests {
		for i := range socks {
			socks[i].taken = false
		}
		for _, i := range tt.taken {
			socks[i].taken = true
		}
		if got := pickPassed(socks, tt.addr); got != tt.want {
			t.Errorf("pickPassed(%q, taken %v) = %d, want %d", tt.addr, tt.taken, got, tt.want)
		}
	}
}

// TestSystemdSocketActivate starts the app through systemd's own tool, the
// reference for the protocol: two sockets, the app picks the one on its port,
// serves on it, clears the variables and marks the other close-on-exec.
func TestSystemdSocketActivate(t *testing.T) {
	tool := testenv.NeedCommand(t, "systemd-socket-activate")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	notifyName, msgs := notifySocket(t, "")
	other, port := freePort(t), freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	// The tool passes on only the variables named with -E. Asking for the
	// passed socket's address proves inheritance: binding it ourselves would
	// fail, as the tool holds it without SO_REUSEPORT.
	c := startChild(t, nil, tool,
		"-l", fmt.Sprintf("127.0.0.1:%d", other), "-l", addr, "--fdname=other:web",
		"-E", envChild+"=1", "-E", "GRACEFUL_TEST_ADDR="+addr, "-E", "NOTIFY_SOCKET="+notifyName,
		exe)
	// The tool execs the app, keeping its pid, on the first connection:
	// wait until it listens, then connect.
	waitListening(t, addr, c)
	body := get(t, "http://"+addr+"/fds")
	waitMsg(t, msgs, "READY=1", c)
	for _, want := range []string{
		`LISTEN_PID=""`, `LISTEN_FDS=""`, `LISTEN_FDNAMES=""`,
		"fd3 cloexec=true", // the unused socket, left open for the app
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/fds lacks %q:\n%s", want, body)
		}
	}
	if got, want := strings.TrimSpace(get(t, "http://"+addr+"/")), fmt.Sprint(c.cmd.Process.Pid); got != want {
		t.Errorf("served by pid %s, want %s", got, want)
	}
	c.signal(t, syscall.SIGTERM)
	waitMsg(t, msgs, "STOPPING=1", c)
	if code := c.exit(t, 5*time.Second); code != 0 {
		t.Fatalf("exit code %d\n%s", code, c.out)
	}
}

// waitListening polls until something listens on addr.
func waitListening(t *testing.T, addr string, c *child) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := net.Dial("tcp", addr)
		if err == nil {
			conn.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s after 10s: %v\n%s", addr, err, c.out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
