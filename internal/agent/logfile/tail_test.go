package logfile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry/internal/testenv"
)

func TestTailLastLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "web.1.log")
	files := map[string]string{
		".3": "a\nb\n",
		".2": "", // a rotated file can be empty
		".1": "c\n\n",
		"":   "d\ne", // the live line is not finished
	}
	for suffix, s := range files {
		if err := os.WriteFile(path+suffix, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		n    int
		want string
	}{
		{0, ""},
		{1, "e\n"},
		{2, "d\ne\n"},
		{3, "\nd\ne\n"},
		{4, "c\n\nd\ne\n"},
		{5, "b\nc\n\nd\ne\n"},
		{6, "a\nb\nc\n\nd\ne\n"},
		{100, "a\nb\nc\n\nd\ne\n"},
		{-1, "a\nb\nc\n\nd\ne\n"},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.n), func(t *testing.T) {
			var out bytes.Buffer
			if err := Tail(context.Background(), path, tt.n, false, &out); err != nil {
				t.Fatal(err)
			}
			if out.String() != tt.want {
				t.Errorf("got %q, want %q", out.String(), tt.want)
			}
		})
	}
}

func TestTailLastLinesOfWrittenLog(t *testing.T) {
	// Lines far longer than Tail's read chunk, across many rotations.
	const total = 600
	path := filepath.Join(t.TempDir(), "web.1.log")
	w, err := Open(path, Options{MaxSize: 1 << 20, Keep: 1000, Buffer: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	for i := range total {
		w.Note("%d %s", i, strings.Repeat("y", i*53%50000))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{1, 7, 100, 450, total, total + 1} {
		var out bytes.Buffer
		if err := Tail(context.Background(), path, n, false, &out); err != nil {
			t.Fatal(err)
		}
		got := numbers(t, out.String())
		first := max(0, total-n)
		if len(got) != total-first || got[0] != first || got[len(got)-1] != total-1 {
			t.Errorf("n=%d: %d lines from %v", n, len(got), got[:1])
		}
	}
}

func TestTailMissing(t *testing.T) {
	err := Tail(context.Background(), filepath.Join(t.TempDir(), "web.1.log"), 10, false, &bytes.Buffer{})
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Tail of a missing log: %v", err)
	}
}

func TestTailFollowsRotation(t *testing.T) {
	tests := []struct {
		name  string
		n     int
		burst int // lines written at once: many rotations between polls
		steps int // then rounds of one rotation each, waiting for Tail to see it
	}{
		{"from start, one rotation at a time", -1, 0, 4},
		{"from start, many rotations between polls", -1, 5000, 2},
		{"only new lines", 0, 2000, 2},
		{"last lines then new", 10, 1000, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "web.1.log")
			const perFile = 50
			// Lines "<ts> ferry <7 digits>" are 45 bytes with the clock fixed.
			w, err := Open(path, Options{MaxSize: perFile * 45, Keep: 10000, Now: fixedClock, Buffer: 64 << 20})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			next := 0
			write := func(k int) {
				for range k {
					w.Note("%07d", next)
					next++
				}
			}
			out := &syncBuffer{}
			seen := func(i int) bool { return strings.Contains(out.String(), fmt.Sprintf(" %07d\n", i)) }
			write(perFile*2 + 20)
			testenv.WaitFor(t, "the first lines on disk", 20*time.Second, func() bool {
				b, _ := os.ReadFile(path)
				return bytes.Contains(b, fmt.Appendf(nil, " %07d\n", next-1))
			})
			first := 0
			if tt.n > 0 {
				first = next - tt.n
			} else if tt.n == 0 {
				first = next
			}

			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- Tail(ctx, path, tt.n, true, out) }()
			if tt.n != 0 {
				testenv.WaitFor(t, "the last lines", 20*time.Second, func() bool { return seen(next - 1) })
			}
			write(tt.burst)
			for range tt.steps {
				write(perFile)
				testenv.WaitFor(t, "a rotation", 20*time.Second, func() bool { return seen(next - 1) })
			}
			write(1)
			testenv.WaitFor(t, "the newest line", 20*time.Second, func() bool { return seen(next - 1) })

			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Tail did not return after cancel")
			}
			got := numbers(t, out.String())
			if tt.n == 0 && len(got) > 0 {
				// Nothing tells when Tail has found the end it starts
				// from; it is somewhere before the burst.
				first = max(first, got[0])
			}
			if len(got) != next-first {
				t.Fatalf("%d lines, want %d", len(got), next-first)
			}
			for i, k := range got {
				if k != first+i {
					t.Fatalf("line %d is %d, want %d", i, k, first+i)
				}
			}
		})
	}
}

func TestTailFollowWaitsForFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "logs", "web.1.log")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- Tail(ctx, path, 10, true, out) }()
	w, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.Note("hello")
	testenv.WaitFor(t, "the line", 20*time.Second, func() bool { return strings.HasSuffix(out.String(), " ferry hello\n") })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// numbers returns the leading number of each line's text.
func numbers(t *testing.T, s string) []int {
	t.Helper()
	var got []int
	for l := range strings.Lines(s) {
		f := strings.Fields(l)
		if len(f) < 3 {
			t.Fatalf("malformed line %q", l)
		}
		k, err := strconv.Atoi(f[2])
		if err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		got = append(got, k)
	}
	return got
}

// syncBuffer is a bytes.Buffer that Tail may write while the test reads.
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
