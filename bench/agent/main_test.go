package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestSmoke runs the whole bench briefly (about 15 s, plus building ferry)
// against the ferry built from this module, and checks the report and the
// JSON hold what was measured.
func TestSmoke(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the bench reads /proc")
	}
	out := filepath.Join(t.TempDir(), "results.json")
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	args := []string{"-idle", "3s", "-changes", "3", "-apps", "2", "-settle", "50ms", "-out", out}
	if bin := os.Getenv("FERRY_BENCH_FERRY"); bin != "" { // a prebuilt ferry; default: build this module's
		args = append(args, "-ferry", bin)
	}
	err := Run(ctx, args, &stdout, &stderr)
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, stderr.String())
	}
	for _, want := range []string{"### Idle, 3s", "| ferry agent |", "| sleep 3s (baseline) |", "no health check", "exec health check every 10 ms", "### Goals"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, stdout.String())
		}
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var res Results
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	if res.Machine.NProc == 0 || res.Idle.MaxRSSKiB == 0 || res.Idle.Threads == 0 || res.Idle.FDs <= 0 {
		t.Errorf("machine or idle facts missing: %+v %+v", res.Machine, res.Idle)
	}
	if len(res.Series) != 2 {
		t.Fatalf("%d series, want 2", len(res.Series))
	}
	for _, s := range res.Series {
		if len(s.Changes) != 3 || !s.Changes[0].Fresh || s.Changes[1].Fresh {
			t.Errorf("series %q: changes %+v", s.Name, s.Changes)
		}
		if len(s.OthersChanged) > 0 {
			t.Errorf("series %q: other apps restarted: %v", s.Name, s.OthersChanged)
		}
		for _, c := range s.Changes {
			if c.ToPIDs <= 0 || c.ToRunning <= 0 || !c.PIDsMatch {
				t.Errorf("series %q: change %+v", s.Name, c)
			}
		}
	}
	// Without a health check the agent waits MinUptime before calling an
	// instance healthy.
	if c := res.Series[0].Changes[1]; c.ToRunning < time.Second {
		t.Errorf("running %v after a change without health check, want at least MinUptime", c.ToRunning)
	}
}
