package proxy

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestErrorLogRateLimited sends requests for 1.5 s through a proxy whose
// only backend is down: every one fails, and the log must say so in at
// most one line per second (plus the first, at once), with counts that add
// up to every failed request.
func TestErrorLogRateLimited(t *testing.T) {
	var logs syncBuffer
	p := New(Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go p.Serve(l)
	dead := deadAddr(t)
	p.Add(dead)

	var failed atomic.Int64
	var wg sync.WaitGroup
	stop := time.Now().Add(1500 * time.Millisecond)
	for range 4 {
		wg.Go(func() {
			c := &http.Client{Timeout: 5 * time.Second}
			for time.Now().Before(stop) {
				res, err := c.Get("http://" + l.Addr().String() + "/")
				if err != nil {
					t.Error(err)
					return
				}
				res.Body.Close()
				if res.StatusCode == http.StatusBadGateway {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p.Shutdown(ctx) // writes what is still counted

	out := logs.String()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	n := failed.Load()
	if n < 100 {
		t.Fatalf("only %d requests failed in 1.5 s; the test needs a flood", n)
	}
	// The first failure is logged as it happens (its retry on another
	// backend, then its 502 counted); then one summary per second, and
	// the rest at Shutdown.
	if len(lines) > 4 {
		t.Errorf("%d failed requests made %d log lines, want at most 4 (one per backend per second):\n%s", n, len(lines), tail(out, 2000))
	}
	count := func(key string) int64 {
		var sum int64
		for _, m := range regexp.MustCompile(`\b`+key+`=(\d+)`).FindAllStringSubmatch(out, -1) {
			v, _ := strconv.ParseInt(m[1], 10, 64)
			sum += v
		}
		return sum
	}
	if got := count("failed"); got != n {
		t.Errorf("the summaries count %d failed requests, %d failed:\n%s", got, n, out)
	}
	if got := count("retried") + 1; got != n { // the first retry is the line logged at once
		t.Errorf("the summaries count %d tries given up on the dead backend, want %d:\n%s", got, n, out)
	}
	for _, line := range lines {
		if !strings.Contains(line, "backend="+dead) {
			t.Errorf("a line does not name the backend %s: %s", dead, line)
		}
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
