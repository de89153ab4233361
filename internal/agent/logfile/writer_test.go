package logfile

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestDrainSplitsLines(t *testing.T) {
	long := strings.Repeat("a", maxLine)
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"empty", "", nil},
		{"lines", "a\nb\n", []string{"a", "b"}},
		{"final line without newline", "a\nb", []string{"a", "b"}},
		{"empty lines", "\n\n", []string{"", ""}},
		{"exactly max", long + "\n", []string{long}},
		{"split long line", long + long + "xyz\nb\n", []string{long, long, "xyz", "b"}},
		{"carriage return kept", "a\r\n", []string{"a\r"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "logs", "web.1.log")
			w, err := Open(path, Options{Now: fixedClock})
			if err != nil {
				t.Fatal(err)
			}
			w.Drain(strings.NewReader(tt.in), "out")
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			var want strings.Builder
			for _, l := range tt.want {
				want.WriteString("2024-01-02T02:04:05.123456789Z out " + l + "\n")
			}
			if string(b) != want.String() {
				t.Errorf("file:\n%.200q\nwant:\n%.200q", b, want.String())
			}
		})
	}
}

func TestOpenCreatesFileAndAppends(t *testing.T) {
	path := filepath.Join(t.TempDir(), "logs", "web.1.log")
	for range 2 {
		w, err := Open(path, Options{Now: fixedClock})
		if err != nil {
			t.Fatal(err)
		}
		w.Note("started pid %d\nsecond line", 123)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm()&^0o640 != 0 {
		t.Errorf("mode %v, want at most 0640", fi.Mode().Perm())
	}
	b, _ := os.ReadFile(path)
	line := "2024-01-02T02:04:05.123456789Z ferry started pid 123\n" +
		"2024-01-02T02:04:05.123456789Z ferry second line\n"
	if string(b) != line+line {
		t.Errorf("file:\n%s", b)
	}
}

func TestOpenError(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "logs"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(filepath.Join(dir, "logs", "web.1.log"), Options{})
	if err == nil || !strings.HasPrefix(err.Error(), "logfile: ") {
		t.Fatalf("Open under a file: %v", err)
	}
}

func TestRotationKeepsFiles(t *testing.T) {
	// With the fixed clock every line "<ts> out <7 digits>" is 43 bytes.
	const lineLen = 43
	tests := []struct {
		name    string
		maxSize int64
		keep    int
		lines   int
		before  []string // rotated files there before Open
	}{
		{"one line per file", lineLen, 3, 10, nil},
		{"several lines per file", 10 * lineLen, 4, 1000, nil},
		{"max not a multiple of a line", 10*lineLen + 20, 2, 500, nil},
		{"line longer than max", 10, 2, 10, nil},
		{"lowered keep removes older files", 5 * lineLen, 2, 100, []string{".1", ".2", ".3", ".7"}},
		{"few lines, fewer files", 100 * lineLen, 5, 250, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "web.1.log")
			for _, s := range tt.before {
				if err := os.WriteFile(path+s, []byte("old\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			w, err := Open(path, Options{MaxSize: tt.maxSize, Keep: tt.keep, Now: fixedClock})
			if err != nil {
				t.Fatal(err)
			}
			var in strings.Builder
			for i := range tt.lines {
				fmt.Fprintf(&in, "%07d\n", i)
			}
			w.Drain(strings.NewReader(in.String()), "out")
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}

			perFile := max(1, int(tt.maxSize/lineLen))
			wantFiles := min(tt.keep+1, (tt.lines+perFile-1)/perFile)
			var want []string
			for i := wantFiles - 1; i >= 1; i-- {
				want = append(want, path+"."+strconv.Itoa(i))
			}
			want = append(want, path)
			if got := Files(path); !slices.Equal(got, want) {
				t.Fatalf("files %q, want %q", got, want)
			}
			for _, name := range want {
				fi, _ := os.Stat(name)
				if fi.Size() > max(tt.maxSize, lineLen) {
					t.Errorf("%s is %d bytes, over %d", filepath.Base(name), fi.Size(), tt.maxSize)
				}
			}
			// What is kept is the newest lines, each once, in order.
			lines := readLog(t, path)
			first := tt.lines - len(lines)
			for i, l := range lines {
				if want := fmt.Sprintf("%07d", first+i); l.text != want {
					t.Fatalf("line %d is %q, want %q", i, l.text, want)
				}
			}
		})
	}
}

func TestFloodFromProcessLosesNoLines(t *testing.T) {
	const n = 200_000
	path := filepath.Join(t.TempDir(), "web.1.log")
	const maxSize = 128 << 10
	w, err := Open(path, Options{MaxSize: maxSize, Keep: 1000, Buffer: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	runHelper(t, w, "flood", n, time.Minute)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if d := w.Dropped(); d != 0 {
		t.Fatalf("dropped %d lines", d)
	}
	files := Files(path)
	if len(files) < 10 {
		t.Errorf("only %d files: the flood did not rotate much", len(files))
	}
	for _, name := range files {
		if fi, _ := os.Stat(name); fi.Size() > maxSize {
			t.Errorf("%s is %d bytes", filepath.Base(name), fi.Size())
		}
	}
	lines := readLog(t, path)
	if len(lines) != n {
		t.Fatalf("%d lines, want %d", len(lines), n)
	}
	for i, l := range lines {
		if l.stream != "out" || l.text != strconv.Itoa(i) {
			t.Fatalf("line %d: %+v", i, l)
		}
		if _, err := time.Parse(time.RFC3339Nano, l.at); err != nil || !strings.HasSuffix(l.at, "Z") {
			t.Fatalf("line %d: timestamp %q not RFC 3339 UTC", i, l.at)
		}
	}
}

func TestSlowDiskNeverBlocksProducer(t *testing.T) {
	const n = 200_000
	path := filepath.Join(t.TempDir(), "web.1.log")
	stalled := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	unstall := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unstall)
	var stallOnce sync.Once
	// The disk hangs on the first write until the producer is done.
	w, err := open(path, Options{Buffer: 64 << 10}, func() {
		stallOnce.Do(func() { close(stalled) })
		<-release
	})
	if err != nil {
		t.Fatal(err)
	}
	w.Note("started")
	<-stalled

	runHelper(t, w, "flood", n, time.Minute)
	dropped := w.Dropped()
	if dropped == 0 {
		t.Fatal("nothing dropped while the disk was stalled")
	}
	unstall()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	// Each gap in the numbers is exactly where a note says how many
	// lines were lost.
	next, notes, reported := 0, 0, int64(0)
	for i, l := range readLog(t, path)[1:] {
		if l.stream == "ferry:" {
			c, ok := strings.CutPrefix(l.text, "dropped ")
			c, ok2 := strings.CutSuffix(c, " lines (log writer behind)")
			k, err := strconv.Atoi(c)
			if !ok || !ok2 || err != nil {
				t.Fatalf("line %d: %+v", i, l)
			}
			next += k
			reported += int64(k)
			notes++
			continue
		}
		if l.text != strconv.Itoa(next) {
			t.Fatalf("line %d is %q, want %d", i, l.text, next)
		}
		next++
	}
	if next != n || reported != dropped || notes == 0 {
		t.Errorf("accounted for %d of %d lines; notes report %d dropped in %d notes, Dropped says %d", next, n, reported, notes, dropped)
	}
}

func TestConcurrentDrainsNeverInterleave(t *testing.T) {
	const n = 2000
	path := filepath.Join(t.TempDir(), "web.1.log")
	w, err := Open(path, Options{MaxSize: 1 << 20, Keep: 1000, Buffer: 256 << 20})
	if err != nil {
		t.Fatal(err)
	}
	runHelper(t, w, "both", n, time.Minute)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	next := map[string]int{}
	for i, l := range readLog(t, path) {
		num, pad, ok := strings.Cut(l.text, " ")
		want := fmt.Sprintf("%s-%d", l.stream, next[l.stream])
		if !ok || num != want || pad != strings.Repeat("x", padding(next[l.stream])) {
			t.Fatalf("line %d on %s: %.80q…, want %s", i, l.stream, l.text, want)
		}
		next[l.stream]++
	}
	if next["out"] != n || next["err"] != n || len(next) != 2 {
		t.Errorf("lines per stream: %v, want %d each", next, n)
	}
}

func TestCloseDropsLaterLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "web.1.log")
	w, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	w.Note("before")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w.Note("after")
	if w.Dropped() != 1 {
		t.Errorf("Dropped %d, want 1", w.Dropped())
	}
	if lines := readLog(t, path); len(lines) != 1 || lines[0].text != "before" {
		t.Errorf("lines %+v", lines)
	}
}

func TestFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "web.1.log")
	for _, name := range []string{"web.1.log", "web.1.log.1", "web.1.log.3", "web.1.log.10", "web.1.log.x", "web.1.log.01", "web.1.log.+2", "web.2.log.1"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(path+".5", 0o700); err != nil {
		t.Fatal(err)
	}
	want := []string{path + ".10", path + ".3", path + ".1", path}
	if got := Files(path); !slices.Equal(got, want) {
		t.Errorf("Files = %q, want %q", got, want)
	}
	if got := Files(filepath.Join(dir, "none.log")); got != nil {
		t.Errorf("Files of a missing log = %q", got)
	}
}
