package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestNewestArtifact(t *testing.T) {
	dir := t.TempDir()
	if _, err := newestArtifact(dir); err == nil || !strings.Contains(err.Error(), "ferry build") {
		t.Errorf("empty dist: err = %v", err)
	}
	for i, name := range []string{"hello-v1.tar.zst", "hello-v3.tar.gz", "hello-v2.tar.zst", "notes.txt"} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(name), 0o644)
		mt := t0.Add(time.Duration(i) * time.Minute)
		if name == "hello-v2.tar.zst" {
			mt = t0.Add(time.Hour)
		}
		os.Chtimes(p, mt, mt)
	}
	os.Mkdir(filepath.Join(dir, "dir.tar.zst"), 0o755)
	got, err := newestArtifact(dir)
	if err != nil || filepath.Base(got) != "hello-v2.tar.zst" {
		t.Errorf("newest = %q, %v", got, err)
	}
}

func TestProgressBar(t *testing.T) {
	now := t0
	var tty, plain bytes.Buffer
	bars := []*progressBar{newProgressBar(&tty, "hello.tar.zst", true), newProgressBar(&plain, "hello.tar.zst", false)}
	for _, p := range bars {
		p.nowFunc = func() time.Time { return now }
	}
	for _, step := range []struct {
		at   time.Duration
		done int64
	}{{0, 0}, {50 * time.Millisecond, 1 << 20}, {time.Second, 10 << 20}, {2 * time.Second, 20 << 20}} {
		now = t0.Add(step.at)
		for _, p := range bars {
			p.update(step.done, 20<<20)
		}
	}
	for _, p := range bars {
		p.finish(true)
	}
	// The 50ms update is skipped: at most ten redraws a second.
	wantTTY := "\rhello.tar.zst [..............................]   0%  0 B / 20.0 MiB\x1b[K" +
		"\rhello.tar.zst [###############...............]  50%  10.0 MiB / 20.0 MiB  10.0 MiB/s\x1b[K" +
		"\rhello.tar.zst [##############################] 100%  20.0 MiB / 20.0 MiB  10.0 MiB/s\x1b[K\n"
	if tty.String() != wantTTY {
		t.Errorf("terminal:\n got %q\nwant %q", tty.String(), wantTTY)
	}
	if want := "hello.tar.zst [##############################] 100%  20.0 MiB / 20.0 MiB  10.0 MiB/s\n"; plain.String() != want {
		t.Errorf("plain:\n got %q\nwant %q", plain.String(), want)
	}
	// An artifact the server had: no bar, no line.
	var skipped bytes.Buffer
	newProgressBar(&skipped, "x", false).finish(false)
	if skipped.Len() != 0 {
		t.Errorf("skipped upload wrote %q", skipped.String())
	}
}
