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

	"github.com/ferrydeploy/ferry/internal/testenv"
)

// TestSmoke runs the whole bench with 3 agents and 1 MiB artifacts (a few
// seconds) and checks that the report and the JSON hold what was measured
// and that nothing was left running.
func TestSmoke(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the bench reads /proc")
	}
	out := filepath.Join(t.TempDir(), "results.json")
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := Run(ctx, []string{"-agents", "3", "-artifact-mb", "1", "-work", t.TempDir(), "-out", out}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, stderr.String())
	}
	for _, want := range []string{"| agents | join all |", "| 3 |", "v2 (release 2)", "0 processes left over"} {
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
	if res.Machine.NProc == 0 || len(res.Runs) != 1 {
		t.Fatalf("machine %+v, %d runs", res.Machine, len(res.Runs))
	}
	run := res.Runs[0]
	if run.Agents != 3 || len(run.Deploys) != 2 || run.Leftover != 0 || run.Err != "" {
		t.Fatalf("run: %+v", run)
	}
	if run.Before.Children != 0 {
		t.Errorf("%d app processes before the first deploy", run.Before.Children)
	}
	for _, d := range run.Deploys {
		if d.State != "succeeded" || d.Delivered != 3 || d.Propagation.N != 3 || d.HostHealthy.N != 3 {
			t.Errorf("%s: %+v", d.Version, d)
		}
		if d.Downloads.Count != 3 || d.Downloads.Bytes != 3*d.Bytes || d.Downloads.MBps <= 0 {
			t.Errorf("%s: downloads %+v of a %d-byte artifact", d.Version, d.Downloads, d.Bytes)
		}
		// No health check: an instance is healthy after MinUptime (1 s).
		if d.ToAllHealthy < time.Second || d.HostHealthy.Max > d.ToAllHealthy {
			t.Errorf("%s: all healthy after %v, hosts %+v", d.Version, d.ToAllHealthy, d.HostHealthy)
		}
		if d.After.Children != 3 {
			t.Errorf("%s: %d app processes, want 3", d.Version, d.After.Children)
		}
	}
}

// TestSmokeDirect runs the fan-out variant: artifacts in a real S3 server,
// agents downloading from it with signed URLs, then a redeploy of the
// first release that the agents' caches serve.
func TestSmokeDirect(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the bench reads /proc")
	}
	testenv.NeedCommand(t, "versitygw")
	out := filepath.Join(t.TempDir(), "results.json")
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := Run(ctx, []string{"-agents", "3", "-artifact-mb", "1", "-s3", "-direct", "-cache-mb", "10", "-redeploy", "-work", t.TempDir(), "-out", out}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, stderr.String())
	}
	b, _ := os.ReadFile(out)
	var res Results
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	run := res.Runs[0]
	if len(run.Deploys) != 3 || run.Leftover != 0 || run.Err != "" {
		t.Fatalf("run: %+v", run)
	}
	for i, d := range run.Deploys {
		want := 3
		if i == 2 {
			want = 0 // the redeploy of v1: cached
		}
		if d.State != "succeeded" || d.Downloads.Count != want || d.Delivered != 3 {
			t.Errorf("deploy %d (%s): %d downloads, want %d; %+v", i+1, d.Version, d.Downloads.Count, want, d)
		}
		if i < 2 && d.S3.Wrote < 3*d.Bytes {
			t.Errorf("deploy %d: the S3 server wrote %d bytes, less than 3 × %d: the downloads did not come from it", i+1, d.S3.Wrote, d.Bytes)
		}
	}
	if !strings.Contains(stdout.String(), "signed URLs") {
		t.Errorf("report does not say how artifacts were delivered:\n%s", stdout.String())
	}
}
