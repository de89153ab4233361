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
