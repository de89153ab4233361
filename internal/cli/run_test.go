package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a command's stdout, read by the test while processes write.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// execRun runs `ferry run args…` in-process until it returns, and gives
// its exit code as cli.Run would compute it.
func execRun(ctx context.Context, out *syncBuffer, args ...string) (int, error) {
	cmd := newRun(Env{Stdin: strings.NewReader(""), Stdout: out, Stderr: out})
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	cmd.SetOut(out)
	cmd.SetErr(out)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	return ExitCode(ctx, err), err
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRunHelp(t *testing.T) {
	out := &syncBuffer{}
	if code, err := execRun(context.Background(), out, "--help"); code != ExitOK {
		t.Fatalf("exit %d: %v", code, err)
	}
	for _, want := range []string{"Examples:", "ferry run -m web=2,worker=1", "--formation", "--timeout", "PORT"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("no %q in help:\n%s", want, out.String())
		}
	}
}

func TestRunUsageErrors(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"Procfile": "web: sleep 100\nworker: sleep 100\n"})
	empty := t.TempDir()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"-d", dir, "-m", "web=x"}, `-m: "web=x" is not name=COUNT`},
		{[]string{"-d", dir, "-m", "api=1"}, `-m: no process "api"; the processes are web, worker`},
		{[]string{"-d", dir, "-m", "web=0"}, "runs no process"},
		{[]string{"-d", dir, "api"}, `no process "api"`},
		{[]string{"-d", empty}, "no ferry.yaml or Procfile in " + empty},
		{[]string{"-f", filepath.Join(empty, "Procfile.dev")}, "Procfile.dev: no such file"},
		{[]string{"-d", dir, "-e", filepath.Join(empty, "x.env")}, "x.env: no such file"},
		{[]string{"-d", dir, "-t", "soon"}, `-t "soon" is not a duration`},
		{[]string{"-d", dir, "-p", "70000"}, "-p 70000 is not a TCP port"},
		{[]string{"-d", dir, "--color", "rainbow"}, "--color"},
	}
	for _, tt := range tests {
		code, err := execRun(context.Background(), &syncBuffer{}, tt.args...)
		if code != ExitUsage || err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ferry run %v: exit %d, %v; want %d and %q", tt.args, code, err, ExitUsage, tt.want)
		}
	}
}

func TestRunFailedProcessExits1(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"Procfile": "web: sleep 100\nmigrate: echo oops >&2; exit 1\n"})
	out := &syncBuffer{}
	code, err := execRun(context.Background(), out, "-d", dir)
	if code != ExitFailure || err == nil || !strings.Contains(err.Error(), "migrate.1 exited with code 1") {
		t.Fatalf("exit %d, %v; output:\n%s", code, err, out.String())
	}
	if !strings.Contains(out.String(), "migrate.1 | oops") {
		t.Errorf("stderr not shown:\n%s", out.String())
	}
}

func TestRunInterruptedExits0(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	writeFiles(t, dir, map[string]string{
		"Procfile": "web: echo \"$GREETING $LOCAL $PORT $FERRY_APP $(pwd)\"; sleep 100\nworker: echo \"worker $PORT\"; sleep 100\n",
		".env":     "GREETING=hello\nLOCAL=from-default\n",
	})
	writeFiles(t, other, map[string]string{"local.env": "LOCAL=from-e\n"})
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"defaults", []string{"-d", dir}, []string{
			"web.1    | hello from-default 5000 " + filepath.Base(dir) + " " + dir, "worker.1 | worker 5100"}},
		{"flags", []string{"-f", filepath.Join(dir, "Procfile"), "-e", filepath.Join(dir, ".env") + "," + filepath.Join(other, "local.env"), "-p", "6000", "-t", "1", "web"},
			[]string{"web.1  | hello from-e 6000 " + filepath.Base(dir) + " " + dir}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			out := &syncBuffer{}
			type result struct {
				code int
				err  error
			}
			done := make(chan result, 1)
			go func() {
				code, err := execRun(ctx, out, tt.args...)
				done <- result{code, err}
			}()
			deadline := time.Now().Add(10 * time.Second)
			for _, w := range tt.want {
				for !strings.Contains(out.String(), w) {
					if time.Now().After(deadline) {
						cancel()
						<-done
						t.Fatalf("no %q in output:\n%s", w, out.String())
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
			cancel()
			select {
			case r := <-done:
				if r.code != ExitOK || r.err != nil {
					t.Fatalf("exit %d, %v; output:\n%s", r.code, r.err, out.String())
				}
			case <-time.After(15 * time.Second):
				t.Fatal("ferry run did not return after cancel")
			}
			if tt.name == "flags" && strings.Contains(out.String(), "worker") {
				t.Errorf("worker ran though only web was asked for:\n%s", out.String())
			}
			if strings.Contains(out.String(), "\x1b[") {
				t.Errorf("colour in output that is not a terminal:\n%q", out.String())
			}
		})
	}
}

func TestRunFerryYAMLNamesTheApp(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"ferry.yaml": "app: hello\nprocesses:\n  web:\n    command: echo \"app=$FERRY_APP port=$PORT\"\n    port: 8080\n"})
	out := &syncBuffer{}
	// web exits 0 by itself, which stops the run cleanly.
	if code, err := execRun(context.Background(), out, "-d", dir, "--color", "always"); code != ExitOK {
		t.Fatalf("exit %d, %v", code, err)
	}
	if !strings.Contains(out.String(), "app=hello port=5000") || !strings.Contains(out.String(), "\x1b[36m") {
		t.Errorf("output:\n%q", out.String())
	}
}
