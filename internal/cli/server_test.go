package cli

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestServerFirstStartPrintsTokenOnce(t *testing.T) {
	data := t.TempDir()
	run := func() string {
		var out, errb syncBuffer
		cmd := newServer(Env{Stdout: &out, Stderr: &errb})
		cmd.SetArgs([]string{"--data", data, "--listen", "127.0.0.1:0"})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- cmd.ExecuteContext(ctx) }()
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(errb.String(), "serving") && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("ferry server: %v\n%s", err, errb.String())
		}
		return out.String()
	}
	first := run()
	tok, err := os.ReadFile(filepath.Join(data, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(data, "admin.token")); fi.Mode().Perm() != 0o600 {
		t.Errorf("admin.token mode %v", fi.Mode())
	}
	for _, want := range []string{strings.TrimSpace(string(tok)), "ferry login https://", "--ca-sha256 ", "ferry agent join-token --group", "ferry agent --server https://"} {
		if !strings.Contains(first, want) {
			t.Errorf("first start does not print %q:\n%s", want, first)
		}
	}
	for _, f := range []string{"state.db", "tls/ca.crt", "artifacts"} {
		if _, err := os.Stat(filepath.Join(data, f)); err != nil {
			t.Error(err)
		}
	}
	if again := run(); strings.Contains(again, strings.TrimSpace(string(tok))) {
		t.Errorf("second start printed the token again:\n%s", again)
	}
}

// TestServerLimitFlags: --max-conns, --max-conns-per-ip and
// --max-artifact-size reach the server, which says what it uses; bad
// values are usage errors that say what to give.
func TestServerLimitFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--max-conns", "-1"}, "--max-conns -1: want a positive number"},
		{[]string{"--max-conns-per-ip", "-5"}, "--max-conns-per-ip -5: want a positive number, or 0"},
		{[]string{"--max-artifact-size", "big"}, `--max-artifact-size "big": want a positive size`},
		{[]string{"--max-artifact-size", "0"}, `--max-artifact-size "0": want a positive size`},
	} {
		out, code := runCLI(t, append([]string{"server", "--data", t.TempDir(), "--listen", "127.0.0.1:0"}, tc.args...)...)
		if code != ExitUsage || !strings.Contains(out, tc.want) {
			t.Errorf("ferry server %v: exit %d, output %q; want 2 and %q", tc.args, code, out, tc.want)
		}
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--max-conns", "40", "--max-conns-per-ip", "7", "--max-artifact-size", "1KiB"}, "max_conns=40 max_conns_per_ip=7 max_artifact_size=1024"},
		{[]string{"--max-conns-per-ip", "0"}, "max_conns_per_ip=0 max_artifact_size=2147483648"},
		{nil, "max_conns_per_ip=256 "},
	} {
		var out, errb syncBuffer
		cmd := newServer(Env{Stdout: &out, Stderr: &errb})
		cmd.SetArgs(append([]string{"--data", t.TempDir(), "--listen", "127.0.0.1:0"}, tc.args...))
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- cmd.ExecuteContext(ctx) }()
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(errb.String(), "serving") && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("ferry server %v: %v\n%s", tc.args, err, errb.String())
		}
		if !strings.Contains(errb.String(), tc.want) {
			t.Errorf("ferry server %v: the log does not say %q:\n%s", tc.args, tc.want, errb.String())
		}
	}
}

func TestDayDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"400d", 400 * 24 * time.Hour, true},
		{"9600h", 400 * 24 * time.Hour, true},
		{"90m", 90 * time.Minute, true},
		{"0d", 0, false},
		{"-1h", 0, false},
		{"a year", 0, false},
		{"1.5d", 0, false},
	} {
		var d time.Duration
		err := dayDuration{&d}.Set(tc.in)
		if (err == nil) != tc.ok || d != tc.want {
			t.Errorf("Set(%q) = %v, %v; want %v, ok %v", tc.in, d, err, tc.want, tc.ok)
		}
	}
	d := 400 * 24 * time.Hour
	if s := (dayDuration{&d}).String(); s != "400d" {
		t.Errorf("String = %q, want 400d", s)
	}
}
